//! Configuration reloads while serving: on SIGHUP, and when the config file
//! or a file it names changes. Files are compared by content every few
//! seconds, so a Kubernetes Secret or ConfigMap update (a `..data` symlink
//! swap) counts like an in-place write. A new configuration is built whole
//! before anything changes; any error refuses it (one log line,
//! `ociregistry_config_reload_failures_total`) and the running one keeps
//! serving. Requests and fetches in flight finish with the settings they
//! started with. Settings that need a restart are named in the log and keep
//! their value.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web;
use ociregistry_actors::coordinator::Reconfigure;
use ociregistry_actors::metrics::METRICS;
use ociregistry_actors::storage::SetRetention;
use ociregistry_actors::upstream::ProxyRules;

use crate::cli::Cli;
use crate::config::Config;
use crate::server;
use crate::state::AppState;

/// How often the configuration's files are compared with what is applied.
const WATCH: Duration = Duration::from_secs(2);

/// Bytes of each file compared by content; beyond them, a change is seen
/// by the file's length, modification time and inode.
const COMPARED: u64 = 1024 * 1024;

/// Reloads the configuration `cli` names into `state` whenever it changes,
/// for as long as the server runs; `current` is the one serving now. What
/// it is compared with (the files, SIGHUP) is taken when this is called,
/// before the server listens: the returned future only watches.
pub fn watch(
    cli: Cli,
    mut current: Config,
    state: web::Data<AppState>,
    log: slog::Logger,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut applied = fingerprint(&cli, &current);
    // The admin port keeps the token it started with.
    let admin_token = current.admin_token().ok().flatten();
    mark_success();
    async move {
        let mut ticks = tokio::time::interval(WATCH);
        loop {
            let by = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = ticks.tick() => "a file changed",
            };
            let seen = fingerprint(&cli, &current);
            if by != "SIGHUP" && seen == applied {
                continue;
            }
            // A refused configuration is tried again once its files change.
            applied = seen;
            match reload(&cli, &state, &log).await {
                Ok(new) => {
                    let restart = needs_restart(&current, &new, &admin_token);
                    if restart.is_empty() {
                        slog::info!(log, "configuration reloaded"; "by" => by);
                    } else {
                        slog::warn!(log, "configuration reloaded; these settings keep their value until a restart";
                        "by" => by, "settings" => restart.join(", "));
                    }
                    current = new;
                    // The new configuration may name other files.
                    applied = fingerprint(&cli, &current);
                    mark_success();
                }
                Err(e) => {
                    METRICS.config_reload_failures.inc();
                    slog::error!(log, "configuration refused; the previous one keeps serving";
                    "by" => by, "error" => e);
                }
            }
        }
    }
}

/// Builds everything the new configuration says, then swaps it in: the
/// server's certificate and client CAs, the upstream settings (new actors,
/// no cached tokens), limits, pins, the serving policy.
async fn reload(cli: &Cli, state: &AppState, log: &slog::Logger) -> Result<Config, String> {
    let loaded = Config::load(cli).map_err(|e| e.to_string())?;
    for w in &loaded.warnings {
        slog::warn!(log, "configuration"; "warning" => w);
    }
    let new = loaded.config;
    let proxy = ProxyRules::from_env().map_err(|e| e.to_string())?;
    let reconfigure = Reconfigure {
        configured: new.upstreams(&proxy).map_err(|e| e.to_string())?,
        unlisted: server::unlisted(&new, proxy).map_err(|e| e.to_string())?,
        limits: new.fetch_limits().map_err(|e| e.to_string())?,
    };
    let retention = new.retention().map_err(|e| e.to_string())?;
    let policy = server::policy(&new).map_err(|e| e.to_string())?;
    let certs = match (&state.certs, new.server_tls().map_err(|e| e.to_string())?) {
        (Some(certs), Some(settings)) => {
            Some((certs, settings.prepare().map_err(|e| e.to_string())?))
        }
        _ => None,
    };
    // Nothing has changed yet; the upstream settings are the last step
    // that can fail.
    state
        .coordinator
        .send(reconfigure)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if let Some((certs, prepared)) = certs {
        certs.replace(prepared);
    }
    state
        .storage
        .send(SetRetention(retention))
        .await
        .map_err(|e| e.to_string())?;
    state.set_policy(policy);
    Ok(new)
}

/// What the configuration file and every file it names hold now: the
/// first [`COMPARED`] bytes of each, its length, modification time and
/// inode (of the file a symbolic link points to).
fn fingerprint(cli: &Cli, config: &Config) -> u64 {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut hash = DefaultHasher::new();
    for path in cli.config_file.iter().chain(&config.named_files()) {
        path.hash(&mut hash);
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        if let Ok(meta) = file.metadata() {
            (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hash);
        }
        let mut head = Vec::new();
        let _ = file.take(COMPARED).read_to_end(&mut head);
        head.hash(&mut hash);
    }
    hash.finish()
}

/// The settings that differ between `old` and `new` and apply only at
/// start-up (listeners, the cache, the log, the shutdown timings);
/// `admin_token` is the token the admin port serves with.
fn needs_restart(old: &Config, new: &Config, admin_token: &Option<String>) -> Vec<&'static str> {
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let settings: [(&'static str, bool); 16] = [
        ("port", old.port != new.port),
        ("host", old.host != new.host),
        ("imagePath", old.image_path != new.image_path),
        ("storage", differ(&old.storage, &new.storage)),
        ("adminPort", old.admin_port != new.admin_port),
        ("adminHost", old.admin_host != new.admin_host),
        (
            "adminToken",
            new.admin_token().ok().flatten() != *admin_token,
        ),
        ("metrics", old.metrics != new.metrics),
        ("health", old.health != new.health),
        (
            "serverTlsConfig (on or off)",
            old.server_tls_config.is_some() != new.server_tls_config.is_some(),
        ),
        ("maxConnections", old.max_connections != new.max_connections),
        (
            "maxConnectionsPerClient",
            old.max_connections_per_client != new.max_connections_per_client,
        ),
        ("logLevel", old.log_level != new.log_level),
        ("logFormat", old.log_format != new.log_format),
        ("pruneConfig", differ(&old.prune_config, &new.prune_config)),
        (
            "client timeouts (headerTimeout, keepAlive, drainTimeout, shutdownDelay)",
            differ(&old.client_limits(), &new.client_limits()),
        ),
    ];
    settings
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(k, _)| k)
        .collect()
}

/// Records that the configuration serving now loaded successfully.
fn mark_success() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    METRICS.config_last_reload_success.set(now.as_secs() as i64);
}
