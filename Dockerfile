# syntax=docker/dockerfile:1
# ociregistry container image.
#   docker build -t ociregistry .
#   docker run --rm -p 8080:8080 ociregistry
# The entrypoint is the server binary; the default command is `serve`, so
# arguments replace it, e.g.:
#   docker run --rm -p 8080:8080 ociregistry --log-level debug serve --pull-timeout 120000

# --- build: the release binary, with the locked dependencies -----------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY config ./config
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ociregistry \
 && install -D -m 0755 target/release/ociregistry /out/usr/local/bin/ociregistry \
 && install -d -m 0750 /out/var/lib/ociregistry

# --- run: glibc, libgcc and CA certificates (the OS trust store), no shell ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/ociregistry /usr/local/bin/ociregistry
# The cache root, owned by the non-root user the server runs as.
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ociregistry"]
CMD ["serve"]
