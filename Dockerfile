# tidegate's image: compiled in the Rust image, run from a slim Debian as a non-root user.
#
#   docker build -t tidegate .                          # `tidegate run` and the CLI
#   docker build -t visits --build-arg EXAMPLE=visits . # also a program of your own
#
# With EXAMPLE, the workspace member of that package name (examples/visits: a `main` that gives
# the engine a pipeline of its own) is built too and installed as /usr/local/bin/<EXAMPLE>; run
# it with `--entrypoint <EXAMPLE>` (compose: `entrypoint: [<EXAMPLE>]`). `tidegate` stays in
# the image for `health` (the HEALTHCHECK), `config` and `setup`. tests/image.rs builds
# exactly what this file copies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY engine ./engine
COPY apps ./apps
COPY examples ./examples
COPY benches ./benches
ARG EXAMPLE=""
RUN cargo build --release --locked --bin tidegate \
    && install -D target/release/tidegate /out/tidegate \
    && if [ -n "$EXAMPLE" ]; then \
         cargo build --release --locked -p "$EXAMPLE" \
         && install -D "target/release/$EXAMPLE" "/out/$EXAMPLE"; \
       fi

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home tidegate
COPY --from=build /out/ /usr/local/bin/
USER tidegate
ENV TIDEGATE_HTTP_ADDR=0.0.0.0:9840
EXPOSE 9840
# Alive: /healthz answers. (Ready, with Redis and MongoDB reachable: `tidegate health --ready`.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 CMD ["tidegate", "health"]
ENTRYPOINT ["tidegate"]
CMD ["run"]
