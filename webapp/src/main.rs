//! `mask-web`: the mask detection web application.
//!
//! ```text
//! mask-web [--config FILE]
//! ```
//! Defaults run out of the box (127.0.0.1:5000, data in ./data, models in ./models, email into
//! ./data/outbox); `MASK_WEB_*` environment variables override the file. See the README.

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use webapp::{App, Settings};

#[derive(Parser)]
#[command(version, about = "The mask detection web application")]
struct Args {
    /// TOML configuration file; MASK_WEB_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // mimalloc's default purge delay, set explicitly: a lower peak than keeping freed memory, at
    // the same throughput (allocator crate, PERFORMANCE.md).
    allocator::return_freed_memory_after(std::time::Duration::from_secs(1));
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let settings = match Settings::load(args.config.as_deref(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mask-web: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (app, startup) = match App::start(settings).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mask-web: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(app.settings.server.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mask-web: cannot listen on {}: {e}",
                app.settings.server.addr
            );
            return std::process::ExitCode::from(1);
        }
    };
    let url = app.settings.public_url();
    println!("mask-web: listening on {url}");
    let admin = &app.settings.accounts.admin_user;
    match &startup.generated_admin_password {
        Some(p) => println!(
            "mask-web: log in as {admin:?} with the generated password {p:?} (also in {}; you will be asked to change it)",
            app.settings
                .server
                .data_dir
                .join("initial-admin-password")
                .display()
        ),
        None => println!(
            "mask-web: log in as {admin:?} (its password was shown at first start and kept in {}, or set MASK_WEB_ADMIN_PASSWORD)",
            app.settings
                .server
                .data_dir
                .join("initial-admin-password")
                .display()
        ),
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    webapp::server::serve(app, listener, shutdown).await;
    std::process::ExitCode::SUCCESS
}
