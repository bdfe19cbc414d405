//! Measures how long one argon2id hash takes on this machine, for the default parameters and a
//! few stronger OWASP-listed alternatives.
//!
//! Usage: `cargo run --release -p accounts --example hash_time [-- ROUNDS]`

use std::time::Instant;

use accounts::PasswordParams;
use accounts::password::PasswordHasher;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("-h" | "--help")) {
        println!("hash_time [ROUNDS]: time argon2id hashing (default 10 rounds per setting)");
        return Ok(());
    }
    let rounds: u32 = arg.map(|a| a.parse()).transpose()?.unwrap_or(10);
    let candidates = [
        ("default (OWASP m=19MiB,t=2,p=1)", PasswordParams::default()),
        (
            "OWASP m=46MiB,t=1,p=1",
            PasswordParams {
                memory_kib: 46 * 1024,
                iterations: 1,
                parallelism: 1,
            },
        ),
        (
            "OWASP m=12MiB,t=3,p=1",
            PasswordParams {
                memory_kib: 12 * 1024,
                iterations: 3,
                parallelism: 1,
            },
        ),
        (
            "stronger m=64MiB,t=3,p=1",
            PasswordParams {
                memory_kib: 64 * 1024,
                iterations: 3,
                parallelism: 1,
            },
        ),
    ];
    for (name, params) in candidates {
        let hasher = PasswordHasher::new(params)?;
        let phc = hasher.hash("warm-up password")?;
        let start = Instant::now();
        for _ in 0..rounds {
            hasher.hash("correct horse battery staple")?;
        }
        let hash_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            hasher.verify("correct horse battery staple", &phc)?;
        }
        let verify_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
        println!("{name:34} hash {hash_ms:7.1} ms   verify {verify_ms:7.1} ms   ({rounds} rounds)");
    }
    Ok(())
}
