//! argon2id password hashing and password generation.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng as _;
use rand::RngCore as _;
use rand::rngs::OsRng;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::{Error, Result};

/// argon2id cost parameters.
///
/// The default is the OWASP Password Storage Cheat Sheet baseline: 19 MiB of memory, 2
/// iterations, 1 lane. Stored hashes carry their own parameters (PHC string), so raising these
/// later keeps old hashes verifiable; each is re-hashed with the new parameters at its user's next
/// successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Iterations (argon2 `t`).
    pub iterations: u32,
    /// Lanes (argon2 `p`).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes and verifies passwords with fixed argon2id parameters, at most a fixed number at
/// once (clones share the limit).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    params: PasswordParams,
    gate: Arc<Gate>,
}

/// A counting semaphore for blocking threads: argon2's memory is held only by those inside.
#[derive(Debug)]
struct Gate {
    inside: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

struct Pass<'a>(&'a Gate);

impl Gate {
    fn new(limit: usize) -> Self {
        Gate {
            inside: Mutex::new(0),
            freed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    fn enter(&self) -> Pass<'_> {
        let mut inside = self.inside.lock().unwrap_or_else(PoisonError::into_inner);
        while *inside >= self.limit {
            inside = self
                .freed
                .wait(inside)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *inside += 1;
        Pass(self)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut inside = self.0.inside.lock().unwrap_or_else(PoisonError::into_inner);
        *inside -= 1;
        self.0.freed.notify_one();
    }
}

impl PasswordHasher {
    /// A hasher using `params`.
    ///
    /// # Errors
    /// [`Error::Config`] if argon2 rejects the parameters (e.g. memory below 8 KiB per lane).
    pub fn new(params: PasswordParams) -> Result<Self> {
        Self::with_concurrency(
            params,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )
    }

    /// A hasher using `params` that runs at most `limit` (at least 1) computations at once;
    /// further callers block until one finishes.
    ///
    /// # Errors
    /// As [`PasswordHasher::new`].
    pub fn with_concurrency(params: PasswordParams, limit: usize) -> Result<Self> {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| Error::Config {
            message: format!("argon2 parameters {params:?}: {e}"),
        })?;
        Ok(Self {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            params,
            gate: Arc::new(Gate::new(limit)),
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// Hashes `password` with a fresh 128-bit random salt, returning a PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
    ///
    /// # Errors
    /// [`Error::Hashing`] if argon2 fails (only on absurd inputs or allocation failure).
    pub fn hash(&self, password: &str) -> Result<String> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(hashing)?;
        let _pass = self.gate.enter();
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(hashing)
    }

    /// Checks `password` against a PHC string, in constant time with respect to the hash
    /// contents. Returns `Ok(false)` for a wrong password.
    ///
    /// # Errors
    /// [`Error::Hashing`] if `phc` is not a parseable argon2 hash.
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool> {
        let parsed = PasswordHash::new(phc).map_err(hashing)?;
        let _pass = self.gate.enter();
        match self.argon.verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(hashing(e)),
        }
    }

    /// Whether a stored hash was made with other parameters (or another algorithm) than this
    /// hasher's, and so should be replaced at the next successful login.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(0x13) {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.memory_kib
                    || p.t_cost() != self.params.iterations
                    || p.p_cost() != self.params.parallelism
            }
            Err(_) => true,
        }
    }
}

fn hashing(e: argon2::password_hash::Error) -> Error {
    Error::Hashing {
        message: e.to_string(),
    }
}

/// Characters of generated passwords: letters and digits without the easily confused
/// `0 O o 1 l I i`.
pub const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789";

/// Length of generated passwords: 20 characters of a 55-letter alphabet is about 115 bits.
pub const GENERATED_PASSWORD_LEN: usize = 20;

/// A random password for an administrator to hand over: 20 characters from
/// [`PASSWORD_ALPHABET`], drawn from the operating system's CSPRNG.
pub fn generate_password() -> String {
    let mut rng = OsRng;
    (0..GENERATED_PASSWORD_LEN)
        .map(|_| char::from(PASSWORD_ALPHABET[rng.gen_range(0..PASSWORD_ALPHABET.len())]))
        .collect()
}

/// `bytes` random bytes from the OS CSPRNG as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn the_gate_lets_at_most_its_limit_in_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Arc::new(Gate::new(2));
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _pass = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(*gate.inside.lock().unwrap(), 0);
    }

    #[test]
    fn hash_and_verify() {
        let h = PasswordHasher::new(PasswordParams::default()).unwrap();
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse", &phc).unwrap());
        assert!(!h.verify("correct horsE", &phc).unwrap());
        assert!(!h.needs_rehash(&phc));
        // Same password, different salt.
        assert_ne!(phc, h.hash("correct horse").unwrap());
    }

    #[test]
    fn old_parameters_still_verify_but_need_rehash() {
        let old = cheap().hash("pw-123456").unwrap();
        let h = PasswordHasher::new(PasswordParams::default()).unwrap();
        assert!(h.verify("pw-123456", &old).unwrap());
        assert!(h.needs_rehash(&old));
        assert!(h.needs_rehash("not a hash"));
    }

    #[test]
    fn garbage_hash_is_an_error_not_a_panic() {
        for garbage in ["", "not a hash", "$argon2id$v=19$m=64,t=1,p=1$!!$!!"] {
            assert!(
                matches!(cheap().verify("x", garbage), Err(Error::Hashing { .. })),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn rejects_impossible_params() {
        let bad = PasswordParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        };
        assert!(matches!(
            PasswordHasher::new(bad),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn generated_passwords() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert_ne!(a, b);
        for c in a.chars().chain(b.chars()) {
            assert!(PASSWORD_ALPHABET.contains(&(c as u8)), "{c}");
            assert!(!"0Oo1lIi".contains(c));
        }
        assert_eq!(random_hex(32).len(), 64);
    }
}
