//! What a server process spent, from `/proc`: CPU time (`utime` + `stime`
//! in `/proc/<pid>/stat`) and resident memory (`VmRSS` in
//! `/proc/<pid>/status`). Works for any process on this machine, whatever
//! it is (a service, its Redis, the floor server), so the same figures are
//! taken the same way for everything compared.

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    /// The command name (`comm`), e.g. `sse-svc` or `redis-server`.
    pub name: String,
    /// CPU time in user mode, in clock ticks.
    pub user_ticks: u64,
    /// CPU time in kernel mode, in clock ticks.
    pub system_ticks: u64,
    pub resident_bytes: u64,
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub user_ticks: u64,
    pub system_ticks: u64,
}

/// Reads `/proc/<pid>/stat`. The command name is in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the
/// last `)`: after it come `state` (field 3), ... `utime` (14), `stime` (15).
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before the command name")?;
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let name = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let field = |n: usize, what: &str| -> Result<u64, String> {
        fields
            .get(n - 3)
            .ok_or_else(|| format!("no {what} (field {n})"))?
            .parse()
            .map_err(|err| format!("{what} (field {n}): {err}"))
    };
    Ok(Stat {
        name,
        user_ticks: field(14, "utime")?,
        system_ticks: field(15, "stime")?,
    })
}

/// `VmRSS` from `/proc/<pid>/status`, in bytes (the file says kB, which is
/// KiB).
pub fn parse_resident(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Reads a process now.
pub fn sample(pid: u32) -> Result<Sample, String> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|err| format!("/proc/{pid}/{file}: {err}"))
    };
    let stat = parse_stat(&read("stat")?).map_err(|err| format!("/proc/{pid}/stat: {err}"))?;
    let resident_bytes = parse_resident(&read("status")?)
        .ok_or_else(|| format!("/proc/{pid}/status: no VmRSS (a zombie?)"))?;
    Ok(Sample {
        pid,
        name: stat.name,
        user_ticks: stat.user_ticks,
        system_ticks: stat.system_ticks,
        resident_bytes,
    })
}

/// Reads every process, in order; the first that cannot be read is the
/// error (a wrong `--server-pid` is an error, not a missing figure).
pub fn sample_all(pids: &[u32]) -> Result<Vec<Sample>, String> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the system; no memory is
    // passed or shared.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// What one process spent between two readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub pid: u32,
    pub name: String,
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub cpu_seconds: f64,
    pub resident_bytes_before: u64,
    pub resident_bytes_after: u64,
}

impl Usage {
    /// The difference of two readings of the same process.
    pub fn between(before: &Sample, after: &Sample, ticks_per_second: u64) -> Usage {
        let seconds = |ticks: u64| ticks as f64 / ticks_per_second.max(1) as f64;
        let user = seconds(after.user_ticks.saturating_sub(before.user_ticks));
        let system = seconds(after.system_ticks.saturating_sub(before.system_ticks));
        Usage {
            pid: after.pid,
            name: after.name.clone(),
            user_seconds: user,
            system_seconds: system,
            cpu_seconds: user + system,
            resident_bytes_before: before.resident_bytes,
            resident_bytes_after: after.resident_bytes,
        }
    }

    /// Every process' usage, pairing the readings by position.
    pub fn all(before: &[Sample], after: &[Sample], ticks_per_second: u64) -> Vec<Usage> {
        before
            .iter()
            .zip(after)
            .map(|(before, after)| Usage::between(before, after, ticks_per_second))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from a service (fields 1-17, then the rest cut short).
    const STAT: &str = "4242 (sse-svc) S 1 4242 4242 0 -1 4194560 1520 0 0 0 \
                        731 266 0 0 20 0 3 0 123456 1000000 2000 18446744073709551615";

    #[test]
    fn utime_and_stime_are_fields_14_and_15() {
        let stat = parse_stat(STAT).expect("parses");
        assert_eq!(
            stat,
            Stat {
                name: "sse-svc".into(),
                user_ticks: 731,
                system_ticks: 266
            }
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = STAT.replace("(sse-svc)", "(tokio (rt) 1 2 3)");
        let stat = parse_stat(&text).expect("parses");
        assert_eq!(stat.name, "tokio (rt) 1 2 3");
        assert_eq!((stat.user_ticks, stat.system_ticks), (731, 266));
    }

    #[test]
    fn a_cut_or_garbled_stat_is_an_error() {
        assert!(parse_stat("4242 (x) S 1 2 3").is_err());
        assert!(parse_stat("4242 x S").is_err());
        assert!(parse_stat(&STAT.replace(" 731 ", " seven ")).is_err());
    }

    #[test]
    fn resident_memory_is_vmrss_in_bytes() {
        let status = "Name:\tsse-svc\nVmPeak:\t  99999 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_resident(status), Some(5120 * 1024));
        assert_eq!(parse_resident("Name:\tzombie\n"), None);
    }

    #[test]
    fn usage_is_the_difference_in_seconds() {
        let at = |user, system, resident| Sample {
            pid: 7,
            name: "redis-server".into(),
            user_ticks: user,
            system_ticks: system,
            resident_bytes: resident,
        };
        let usage = Usage::between(&at(100, 50, 1000), &at(350, 75, 3000), 100);
        assert_eq!(usage.user_seconds, 2.5);
        assert_eq!(usage.system_seconds, 0.25);
        assert_eq!(usage.cpu_seconds, 2.75);
        assert_eq!(
            (usage.resident_bytes_before, usage.resident_bytes_after),
            (1000, 3000)
        );
    }

    #[test]
    fn this_process_is_readable_and_its_cpu_time_grows_as_it_works() {
        let pid = std::process::id();
        let before = sample(pid).expect("our own /proc");
        assert!(before.resident_bytes > 0);
        let ticks = ticks_per_second();
        // Work until the kernel has charged us at least two ticks; on a
        // busy machine that takes longer, but never forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            let now = sample(pid).expect("our own /proc");
            let usage = Usage::between(&before, &now, ticks);
            if usage.cpu_seconds >= 2.0 / ticks as f64 {
                assert!(usage.user_seconds > 0.0, "busy work is user time");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "20 s of busy work and no CPU time charged"
            );
        }
    }

    #[test]
    fn a_process_that_does_not_exist_is_an_error() {
        // PIDs are at most 2^22 on Linux.
        let err = sample(u32::MAX).expect_err("no such process");
        assert!(err.contains("/proc/4294967295/stat"), "{err}");
    }
}
