# pgrelay image: node:20-slim, built from this repository.
#   docker build -t pgrelay .
#   docker run --rm -p 9999:9999 -v $PWD/docker/pgpool.conf:/etc/pgrelay/pgpool.conf:ro pgrelay

# ---- build stage: dev dependencies + tsc
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
RUN npm run build && npm prune --omit=dev

# ---- runtime stage: dist + production dependencies only
FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /etc/pgrelay && chown node:node /etc/pgrelay
USER node
EXPOSE 9999
STOPSIGNAL SIGTERM
CMD ["node", "dist/cli.js", "-f", "/etc/pgrelay/pgpool.conf"]
