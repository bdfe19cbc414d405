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

/// mimalloc instead of the C library's allocator: a detection allocates and frees a few hundred
/// MiB of activations, and glibc's per-thread arenas kept each thread's high-water mark, so the
/// server's peak RSS grew to ~1 GiB at one upload at a time (374 MiB with `MALLOC_ARENA_MAX=1`).
/// Measured with `benches/src/bin/load.rs`; the figures are in PERFORMANCE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep the memory mimalloc frees mapped for reuse instead of returning it to the kernel after a
/// second of disuse (mimalloc's default purge delay): a detection frees and reallocates the same
/// large activations on every run, and returning them made each run fault them in and zero them
/// again. `stage_times` over three photos: 22,000-27,000 page faults and 0.44-0.94 s of kernel
/// time with the default, ~700 and 0.21-0.34 s with this, and 2-16% more images per second with
/// both cores busy (PERFORMANCE.md). Peak memory is unchanged; memory is not handed back after
/// a burst.
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h), which
    // libmimalloc-sys 0.1.49 builds but does not name.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it takes no pointer
    // and may be called at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

#[derive(Parser)]
#[command(version, about = "The mask detection web application")]
struct Args {
    /// TOML configuration file; MASK_WEB_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    keep_freed_memory();
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
    let listener = match tokio::net::TcpListener::bind(app.settings.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mask-web: cannot listen on {}: {e}", app.settings.addr);
            return std::process::ExitCode::from(1);
        }
    };
    let url = app.settings.public_url();
    println!("mask-web: listening on {url}");
    let admin = &app.settings.admin_user;
    match &startup.generated_admin_password {
        Some(p) => println!(
            "mask-web: log in as {admin:?} with the generated password {p:?} (also in {}; you will be asked to change it)",
            app.settings
                .data_dir
                .join("initial-admin-password")
                .display()
        ),
        None => println!(
            "mask-web: log in as {admin:?} (its password was shown at first start and kept in {}, or set MASK_WEB_ADMIN_PASSWORD)",
            app.settings
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
