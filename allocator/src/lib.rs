//! The memory allocator of every program that runs the detector (`mask-web`, the Python module,
//! the examples, the benchmarks): linking this crate makes mimalloc the program's global
//! allocator, and [`keep_freed_memory`] tunes it for the detector's pattern of use.
//!
//! Why not the C library's allocator (PERFORMANCE.md, "Design decisions"): glibc's per-thread
//! arenas keep each thread's high-water mark of detection activations, which more than doubles
//! the web server's resident memory; and glibc hands tract's large activations back to the
//! kernel after every run, so every run pays their page faults again. In the Python module it
//! serves the Rust side only; Python keeps its own allocator.
//!
//! A program uses it by calling [`keep_freed_memory`] or [`return_freed_memory_after`] once at
//! start-up, which also links the crate (an unreferenced dependency would not be linked, and its
//! allocator not installed). Programs that run detections back to back on one thread (the
//! benchmarks, the examples, the Python module) keep freed memory; the web server, whose many
//! threads free activations, images and bodies of every size, returns it after a second.

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h), which libmimalloc-sys
/// 0.1.49 builds but does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep the memory mimalloc frees mapped for reuse instead of returning it to the kernel after a
/// second of disuse (mimalloc's default purge delay): a detection frees and reallocates the same
/// large activations on every run, and returning them made each run fault them in and zero them
/// again: with the default, a run of `stage_times` takes tens of thousands of page faults, with
/// this a few hundred, all in the warm-up, and more images per second with both cores busy
/// (PERFORMANCE.md). Peak memory is unchanged; memory is not handed back after a burst. Call it
/// once, before the first detection; calling it again changes nothing.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it takes no pointer
    // and may be called at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

/// Return memory mimalloc frees to the kernel once it has been unused for `delay` (mimalloc's
/// own default is one second). For the web server, whose many threads free blocks of every
/// size: with [`keep_freed_memory`] its peak resident memory was higher (559-652 against
/// 489-526 MiB at 8 concurrent uploads, 752 against 633-648 MiB at 32, PERFORMANCE.md) for the
/// same uploads per second; under steady load freed memory is reused within the delay, so the
/// page faults `keep_freed_memory` avoids mostly do not come back (a delay of 0 does bring them
/// back: a fifth fewer uploads per second).
pub fn return_freed_memory_after(delay: std::time::Duration) {
    let ms = std::ffi::c_long::try_from(delay.as_millis()).unwrap_or(std::ffi::c_long::MAX);
    // SAFETY: as in `keep_freed_memory`: an integer stored in mimalloc's option table.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: `mi_option_get` reads an integer from mimalloc's option table; no pointer.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
        }
    }

    /// The option number names the purge delay (its default, 1000 ms, is mimalloc v3's for that
    /// option), and [`keep_freed_memory`] turns purging off.
    #[test]
    fn keep_freed_memory_turns_purging_off() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("not checking the default purge delay: MIMALLOC_PURGE_DELAY is set");
        } else {
            assert_eq!(
                purge_delay(),
                1000,
                "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
            );
        }
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
        return_freed_memory_after(std::time::Duration::from_millis(250));
        assert_eq!(purge_delay(), 250);
    }
}
