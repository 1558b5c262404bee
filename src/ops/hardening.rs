//! Process hardening against key material leaking through the operating
//! system: no core dumps, not dumpable (ptrace by non-root peers and
//! /proc/<pid>/mem are refused), and optionally all memory locked so that
//! keys never reach swap.

/// What hardening took effect, for the start-up log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hardened {
    /// RLIMIT_CORE set to 0.
    pub core_dumps_off: bool,
    /// PR_SET_DUMPABLE cleared.
    pub not_dumpable: bool,
    /// mlockall(MCL_CURRENT | MCL_FUTURE) succeeded.
    pub memory_locked: bool,
}

/// Turns off core dumps and dumpability; with `lock_memory`, locks every
/// page the process touches, now or later (`MCL_ONFAULT`, Linux 4.4+),
/// failing if the system refuses (RLIMIT_MEMLOCK or CAP_IPC_LOCK). Where the OS lacks a mechanism, nothing is done and
/// the result says so.
pub fn harden(lock_memory: bool) -> Result<Hardened, String> {
    let mut h = Hardened::default();
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        h.core_dumps_off = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .is_ok();
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, set_dumpable_behavior};
        h.not_dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
    }
    if lock_memory {
        #[cfg(target_os = "linux")]
        {
            use rustix::mm::{MlockAllFlags, mlockall};
            // ONFAULT: a page is locked when first touched, not populated
            // when mapped. Without it every reserved region (thread stacks,
            // the allocator's arenas) would be made resident at once: over
            // 1 GB locked at start with mimalloc, for no key material.
            mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT).map_err(|e| {
                format!("lock_memory: mlockall refused ({e}); raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK, or turn lock_memory off")
            })?;
            h.memory_locked = true;
        }
        #[cfg(not(target_os = "linux"))]
        return Err("lock_memory is supported on Linux only".into());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_turned_off() {
        let h = super::harden(false).unwrap_or_default();
        #[cfg(target_os = "linux")]
        {
            assert!(h.core_dumps_off && h.not_dumpable, "{h:?}");
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
            let core = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .unwrap_or_default();
            assert!(
                core.split_whitespace().filter(|w| *w == "0").count() >= 2,
                "{core}"
            );
        }
        let _ = h;
    }
}
