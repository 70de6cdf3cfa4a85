//! `strftime_now(format)` for chat templates (Llama 3's puts today's date in the system turn):
//! C's `strftime` in the "C" locale over a wall-clock time the caller supplies, so the binding
//! can pass JavaScript's local time and tests a fixed one.

/// A moment and the local offset from UTC it is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub unix_seconds: i64,
    pub utc_offset_minutes: i32,
}

impl Clock {
    /// Now, in UTC.
    pub fn utc_now() -> Clock {
        let seconds =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Clock { unix_seconds: seconds, utc_offset_minutes: 0 }
    }
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

struct Civil {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: usize,
    /// 1..=366
    day_of_year: u32,
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil(clock: Clock) -> Civil {
    let local = clock.unix_seconds + 60 * i64::from(clock.utc_offset_minutes);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const BEFORE_MONTH: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = BEFORE_MONTH[month as usize - 1] + day + u32::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        weekday: (days + 4).rem_euclid(7) as usize,
        day_of_year,
    }
}

/// Formats `clock` by `format`. Directives this does not know are written as they are.
pub fn strftime(format: &str, clock: Clock) -> String {
    let t = civil(clock);
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(directive) = chars.next() else {
            out.push('%');
            break;
        };
        let hour12 = if t.hour.is_multiple_of(12) { 12 } else { t.hour % 12 };
        match directive {
            'a' => out.push_str(&WEEKDAYS[t.weekday][..3]),
            'A' => out.push_str(WEEKDAYS[t.weekday]),
            'b' | 'h' => out.push_str(&MONTHS[t.month as usize - 1][..3]),
            'B' => out.push_str(MONTHS[t.month as usize - 1]),
            'd' => out.push_str(&format!("{:02}", t.day)),
            'e' => out.push_str(&format!("{:2}", t.day)),
            'H' => out.push_str(&format!("{:02}", t.hour)),
            'I' => out.push_str(&format!("{hour12:02}")),
            'j' => out.push_str(&format!("{:03}", t.day_of_year)),
            'm' => out.push_str(&format!("{:02}", t.month)),
            'M' => out.push_str(&format!("{:02}", t.minute)),
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'S' => out.push_str(&format!("{:02}", t.second)),
            'y' => out.push_str(&format!("{:02}", t.year.rem_euclid(100))),
            'Y' => out.push_str(&t.year.to_string()),
            'F' => out.push_str(&format!("{}-{:02}-{:02}", t.year, t.month, t.day)),
            'T' => out.push_str(&format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second)),
            'u' => out.push_str(&(if t.weekday == 0 { 7 } else { t.weekday }).to_string()),
            'w' => out.push_str(&t.weekday.to_string()),
            'z' => {
                let m = clock.utc_offset_minutes;
                let sign = if m < 0 { '-' } else { '+' };
                out.push_str(&format!("{sign}{:02}{:02}", m.abs() / 60, m.abs() % 60));
            }
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_c_strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday; shown at UTC+05:30.
        let clock = Clock { unix_seconds: 1_709_211_909, utc_offset_minutes: 330 };
        assert_eq!(strftime("%d %b %Y", clock), "29 Feb 2024");
        assert_eq!(
            strftime("%A %B %e, %H:%M:%S %p %I %j %z %% %q", clock),
            "Thursday February 29, 18:35:09 PM 06 060 +0530 % %q"
        );
        let epoch = Clock { unix_seconds: 0, utc_offset_minutes: -60 };
        assert_eq!(strftime("%F %T %a %y %u %w", epoch), "1969-12-31 23:00:00 Wed 69 3 3");
    }
}
