//! Kubernetes resource quantities as integers, for summing capacity.
//!
//! CPU is counted in millicores and everything else in whole units (bytes
//! for memory), which is all the fleet's inventory and replica estimation
//! need. Parsing follows the Kubernetes quantity grammar: a decimal number
//! with an optional binary (Ki, Mi, …), decimal (k, M, G, …, m for milli)
//! or exponent (e3) suffix.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid Kubernetes quantity")]
pub struct QuantityError(pub String);

/// The value of `q` multiplied by `scale` (1000 for millicores, 1 for
/// units), rounded up as Kubernetes does for requests.
pub fn parse_scaled(q: &str, scale: u128) -> Result<u128, QuantityError> {
    let err = || QuantityError(q.to_string());
    let s = q.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('-') {
        return Err(err());
    }
    let number = number.trim_start_matches('+');
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err());
    }
    // value = digits / 10^frac_len * multiplier
    let digits: u128 = format!("{int_part}{frac_part}").parse().map_err(|_| err())?;
    let frac_len = frac_part.len() as u32;
    let (mult_num, mult_den): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().map_err(|_| err())?;
            (10u128.checked_pow(exp).ok_or_else(err)?, 1)
        }
        _ => return Err(err()),
    };
    let num = digits.checked_mul(mult_num).and_then(|v| v.checked_mul(scale)).ok_or_else(err)?;
    let den = 10u128.checked_pow(frac_len).and_then(|p| p.checked_mul(mult_den)).ok_or_else(err)?;
    Ok(num.div_ceil(den))
}

/// CPU in millicores.
pub fn millicores(q: &str) -> Result<u128, QuantityError> {
    parse_scaled(q, 1000)
}

/// Whole units (bytes for memory, a count for pods).
pub fn units(q: &str) -> Result<u128, QuantityError> {
    parse_scaled(q, 1)
}

/// Formats millicores as Kubernetes would (`1500m`, `4`).
pub fn format_millicores(m: u128) -> String {
    if m.is_multiple_of(1000) {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// Formats bytes with the largest exact binary suffix (`8Gi`, `1536Mi`).
pub fn format_bytes(b: u128) -> String {
    for (suffix, size) in [
        ("Ei", 1u128 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{suffix}", b / size);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(millicores("100m").unwrap(), 100);
        assert_eq!(millicores("2").unwrap(), 2000);
        assert_eq!(millicores("0.5").unwrap(), 500);
        assert_eq!(millicores("1.25").unwrap(), 1250);
        assert_eq!(units("64Mi").unwrap(), 64 << 20);
        assert_eq!(units("1Gi").unwrap(), 1 << 30);
        assert_eq!(units("1G").unwrap(), 1_000_000_000);
        assert_eq!(units("129e6").unwrap(), 129_000_000);
        assert_eq!(units("110").unwrap(), 110);
        assert_eq!(units("1.5Gi").unwrap(), 3 << 29);
        // Requests round up: 1m of a unit is still one unit.
        assert_eq!(units("1m").unwrap(), 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "-1", "1Xi", "1.2.3", "e3"] {
            assert!(units(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_millicores(4000), "4");
        assert_eq!(format_millicores(1500), "1500m");
        assert_eq!(format_bytes(8 << 30), "8Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(units(&format_bytes(3 << 29)).unwrap(), 3 << 29);
    }
}
