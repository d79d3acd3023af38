//! Value types with units: durations, memory and CPU quantities, rates.

use std::fmt;

/// A positive duration, kept in milliseconds and as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    pub millis: u64,
    pub text: String,
}

impl Duration {
    /// Parse `500ms`, `10s`, `5m`, `1h30m`, `15d`, `2w`, `1y`.
    pub fn parse(s: &str) -> Option<Duration> {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return None;
        }
        let mut i = 0;
        let mut total: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 12 {
                return None;
            }
            let n: u64 = s[start..i].parse().ok()?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit: u64 = match &s[ustart..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "y" => 31_536_000_000,
                _ => return None,
            };
            total = total.checked_add(n.checked_mul(unit)?)?;
        }
        Some(Duration {
            millis: total,
            text: s.to_string(),
        })
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.millis as f64 / 1000.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A memory size in bytes, kept as written (Kubernetes quantity syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    pub bytes: u64,
    pub text: String,
}

impl Memory {
    /// Parse `512Mi`, `1Gi`, `1G`, `100M`, `64k`, or plain bytes.
    pub fn parse(s: &str) -> Option<Memory> {
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.len() > 20 {
            return None;
        }
        let mult: f64 = match unit {
            "" => 1.0,
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        let n: f64 = num.parse().ok()?;
        let bytes = n * mult;
        if !(1.0..=1.0e18).contains(&bytes) || bytes.fract() != 0.0 {
            return None;
        }
        Some(Memory {
            bytes: bytes as u64,
            text: s.to_string(),
        })
    }
}

/// A CPU amount in millicores, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    pub millis: u64,
    pub text: String,
}

impl Cpu {
    /// Parse `500m`, `0.5`, `2`.
    pub fn parse(s: &str) -> Option<Cpu> {
        let millis = if let Some(m) = s.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) || m.len() > 9 {
                return None;
            }
            m.parse::<u64>().ok()?
        } else {
            if s.is_empty()
                || s.starts_with('.')
                || s.ends_with('.')
                || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                || s.len() > 12
            {
                return None;
            }
            let v: f64 = s.parse().ok()?;
            let m = v * 1000.0;
            if m.fract() != 0.0 {
                return None;
            }
            m as u64
        };
        if millis == 0 || millis > 1_000_000 {
            return None;
        }
        Some(Cpu {
            millis,
            text: s.to_string(),
        })
    }
}

/// A request rate for nginx `limit_req_zone`: `10r/s` or `600r/m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per_minute: bool,
}

impl Rate {
    pub fn parse(s: &str) -> Option<Rate> {
        let (n, per_minute) = if let Some(n) = s.strip_suffix("r/s") {
            (n, false)
        } else if let Some(n) = s.strip_suffix("r/m") {
            (n, true)
        } else {
            return None;
        };
        if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count: u32 = n.parse().ok()?;
        (count > 0).then_some(Rate { count, per_minute })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}r/{}",
            self.count,
            if self.per_minute { "m" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("10s").unwrap().millis, 10_000);
        assert_eq!(Duration::parse("1h30m").unwrap().millis, 5_400_000);
        assert_eq!(Duration::parse("500ms").unwrap().millis, 500);
        assert_eq!(Duration::parse("15d").unwrap().millis, 15 * 86_400_000);
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "-5s",
            "1.5s",
            "10sec",
            "99999999999999999999s",
        ] {
            assert!(Duration::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(Memory::parse("1Gi").unwrap().bytes, 1 << 30);
        assert_eq!(Memory::parse("512Mi").unwrap().bytes, 512 << 20);
        assert_eq!(Memory::parse("1G").unwrap().bytes, 1_000_000_000);
        assert_eq!(Memory::parse("1.5Gi").unwrap().bytes, 3 << 29);
        for bad in ["", "1GB", "Gi", "0", "-1Gi", "1.Gi", "0.1"] {
            assert!(Memory::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cpu() {
        assert_eq!(Cpu::parse("500m").unwrap().millis, 500);
        assert_eq!(Cpu::parse("0.5").unwrap().millis, 500);
        assert_eq!(Cpu::parse("2").unwrap().millis, 2000);
        for bad in ["", "0", "m", "0.0001", "1.5 cores", "-1"] {
            assert!(Cpu::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(Rate::parse("10r/s").unwrap().to_string(), "10r/s");
        assert_eq!(Rate::parse("600r/m").unwrap().to_string(), "600r/m");
        for bad in ["10", "r/s", "0r/s", "10r/h", "-1r/s"] {
            assert!(Rate::parse(bad).is_none(), "{bad}");
        }
    }
}
