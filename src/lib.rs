//! ociregistry: a pull-only, pull-through caching OCI Distribution server.
//!
//! Layout (see ARCHITECTURE.md for the request flow and invariants):
//! - [`cli`]: command-line flags.
//! - [`commands`]: the subcommands.
//! - [`node_config`]: a node's container runtime pointed at the mirror.
//! - [`config`]: defaults < file < environment < flags.
//! - [`route`]: `/v2/...` path → endpoint.
//! - [`namespace`]: which upstream registry and repository a request means.
//! - [`handlers`]: manifest, blob, tag-list and catalog handlers.
//! - [`state`]: what every handler shares (actor addresses, serving policy).
//! - [`freshness`]: when a cached tag is answered without the upstream.
//! - [`image_ref`]: image references (`[registry/]repo[:tag][@digest]`).
//! - [`preload`]: filling the cache from a list of images.
//! - [`prune`]: prune requests from the CLI, the admin API and the config.
//! - [`range`]: `Range` header parsing.
//! - [`units`]: durations in the configuration.
//! - [`error`]: every client-facing error and its OCI code, in one place
//!   (and the API version header every response carries).
//! - [`access_log`]: one log line per request.
//! - [`connections`]: client connections: per-client cap, idle ones closed
//!   first near `maxConnections`, a deadline on every request head.
//! - [`admin`]: the admin API (list, history, prune, stats) on its own port.
//! - [`probes`]: `/health`, `/ready` and the Prometheus `/metrics`.
//! - [`hello_world`]: the embedded demo image.
//! - [`tarball`]: images from OCI-layout and `docker save` tarballs.
//! - [`server`]: start-up: cache, actors, listener.
//! - [`reload`]: configuration reloads while serving (SIGHUP, file changes).
//!
//! The actors (PullCoordinator, Storage, UpstreamRegistry) live in the
//! `ociregistry-actors` crate.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod error;
pub mod freshness;
pub mod handlers;
pub mod hello_world;
pub mod image_ref;
pub mod namespace;
pub mod node_config;
pub mod preload;
pub mod probes;
pub mod prune;
pub mod range;
pub mod reload;
pub mod route;
pub mod server;
pub mod state;
pub mod tarball;
pub mod units;
