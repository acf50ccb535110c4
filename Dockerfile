# Bulkhead: a static binary on distroless, running as the non-root user 65532.
#
#   docker build -t bulkheadhq/bulkhead:0.1.0 .
#   docker run --rm -p 8080:8080 -e BULKHEAD_HTTP_ADDR=0.0.0.0:8080 \
#     -e BULKHEAD_DATABASE_URL=postgres://bulkhead_app:...@db:5432/bulkhead \
#     bulkheadhq/bulkhead:0.1.0
#
# The image sets no BULKHEAD_ variables: the environment outranks the config
# file, so a default baked in here would silently override the Helm chart's.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# `bulkhead version` and bulkhead_build_info: --build-arg VERSION=… COMMIT=…
# (without them Go's own VCS stamp is used when .git is in the context).
ARG VERSION=""
ARG COMMIT=""
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X github.com/bulkheadhq/bulkhead/internal/build.version=${VERSION} -X github.com/bulkheadhq/bulkhead/internal/build.commit=${COMMIT}" \
    -o /out/bulkhead ./cmd/bulkhead

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bulkhead /bulkhead
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/bulkhead"]
CMD ["serve"]
