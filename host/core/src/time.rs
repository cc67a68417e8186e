//! Timestamps as the core sees them: milliseconds since the Unix epoch, handed in by the shell.
//! The core never reads the clock.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A point in time with millisecond precision (Marathon prints exactly three fractional digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }

    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Parses Marathon's `2015-09-25T15:13:48.343Z` and the other RFC 3339 forms clients send.
    pub fn parse(s: &str) -> Option<Self> {
        let dt =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).ok().map(Timestamp)
    }
}

/// Year, month, day of a day count since 1970-01-01 (Hinnant's civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Timestamp {
    /// `2015-09-25T15:13:48.343Z`, written digit by digit: timestamps are in every stored record
    /// and API response (three per task in a task listing), and `fmt` machinery was a visible
    /// share of the time to render one.
    fn iso8601(self) -> [u8; 24] {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        // Past what four year digits hold (only a saturated `plus` gets there): the last one.
        if year > 9999 {
            return *b"9999-12-31T23:59:59.999Z";
        }
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year.max(0) as u64);
        put(5, 2, u64::from(month));
        put(8, 2, u64::from(day));
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, ms);
        b
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.iso8601();
        f.write_str(std::str::from_utf8(&buf).expect("ASCII digits"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = self.iso8601();
        s.serialize_str(std::str::from_utf8(&buf).expect("ASCII digits"))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("error.expected.date.isoformat"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_three_millisecond_digits() {
        let t = Timestamp::from_millis(1_443_194_028_343);
        assert_eq!(t.to_string(), "2015-09-25T15:13:48.343Z");
        assert_eq!(
            Timestamp::from_millis(1_443_194_028_000).to_string(),
            "2015-09-25T15:13:48.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(u64::MAX).to_string(),
            "9999-12-31T23:59:59.999Z",
            "saturated, not wrapped into a wrong date"
        );
    }

    #[test]
    fn formatting_agrees_with_the_time_crate() {
        let mut t: u64 = 0;
        while t < 5_000_000_000_000 {
            let ours = Timestamp::from_millis(t).to_string();
            let dt =
                time::OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1_000_000).unwrap();
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            assert_eq!(ours, dt.format(&fmt).unwrap(), "{t}");
            t += 7_777_777_777; // about 90 days and an odd number of milliseconds
        }
    }

    #[test]
    fn parses_what_it_prints_and_offsets() {
        let t = Timestamp::from_millis(1_443_194_028_343);
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert_eq!(Timestamp::parse("2015-09-25T17:13:48.343+02:00"), Some(t));
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
