# syntax=docker/dockerfile:1.7
# pgbaseline operator image: a static-ish Rust build on Debian bookworm, copied into a distroless
# runtime that holds only the binary (plus glibc/libgcc from the base), running as UID 65532.
#
#   docker build -t pgbaseline:dev .
#   docker run --rm pgbaseline:dev --help
#
# Both base images are pinned by tag; pin them by digest too (`image:tag@sha256:...`) in a
# release pipeline that can resolve digests.

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5
# Only what the build needs (see .dockerignore); Cargo.lock makes --locked reproducible.
COPY . ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin pgbaseline \
 && install -D -m 0755 target/release/pgbaseline /out/pgbaseline \
 && /out/pgbaseline --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="pgbaseline" \
      org.opencontainers.image.description="Kubernetes operator that enforces PostgreSQL security baselines on Amazon RDS and Aurora" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/pgbaseline /pgbaseline
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/pgbaseline"]
CMD ["run"]
