# Multi-stage build: compile in the Rust image, run from a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home tidegate
COPY --from=build /src/target/release/tidegate /usr/local/bin/tidegate
USER tidegate
ENV TIDEGATE_HTTP_ADDR=0.0.0.0:9840
EXPOSE 9840
ENTRYPOINT ["tidegate"]
CMD ["run"]
