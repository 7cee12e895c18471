//! The `ociregistry` binary.

use clap::Parser;
use ociregistry::cli::{Cli, Command};
use ociregistry::commands;
use ociregistry::config::{Config, LogFormat};
use slog::Drain;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let loaded = match Config::load(&cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ociregistry: configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log = logger(&loaded.config.log_level, loaded.config.log_format);
    for w in &loaded.warnings {
        slog::warn!(log, "configuration"; "warning" => w);
    }
    let result = match &cli.command {
        Command::Serve(serve) => commands::serve(loaded.config, &cli, serve, &log),
        Command::Load(args) => commands::load(&loaded.config, args, &log),
        Command::List(args) => commands::list(&loaded.config, args, &log),
        Command::Prune(args) => commands::prune(&loaded.config, args, &log),
        Command::NodeConfig(action) => commands::node_config(action, &log),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            slog::crit!(log, "failed"; "error" => %e);
            eprintln!("ociregistry: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A synchronous logger on stderr at `level` (unknown names: info):
/// terminal lines, or one JSON object per line for `json`.
fn logger(level: &str, format: LogFormat) -> slog::Logger {
    let level = match level.to_ascii_lowercase().as_str() {
        "error" => slog::Level::Error,
        "warn" | "warning" => slog::Level::Warning,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        _ => slog::Level::Info,
    };
    if format == LogFormat::Json {
        let json = slog_json::Json::new(std::io::stderr())
            .add_default_keys()
            .build();
        root(std::sync::Mutex::new(json).fuse(), level)
    } else {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        root(slog_term::FullFormat::new(decorator).build().fuse(), level)
    }
}

/// The root logger over `drain`, filtered at `level`.
fn root<D>(drain: D, level: slog::Level) -> slog::Logger
where
    D: Drain<Ok = (), Err = slog::Never>
        + Send
        + Sync
        + std::panic::RefUnwindSafe
        + std::panic::UnwindSafe
        + 'static,
{
    slog::Logger::root(slog::LevelFilter::new(drain, level).fuse(), slog::o!())
}
