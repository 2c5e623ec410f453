//! Timestamps: civil-time arithmetic on epoch microseconds, the three stamp forms of
//! formats.md (RFC 5424, RFC 3164, CEF `end`), and `registerDate` parsing, all without
//! allocation. Zone offsets for `tz = "local"` come from chrono's `Local`, cached per
//! 15-minute bucket because chrono re-reads `TZ` (allocating) once a second.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Local, Offset, TimeZone};

use super::num::{put_i64, put_u64};
use super::settings::Tz;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub micros: u32,
    /// Seconds east of UTC.
    pub offset: i32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Breaks `us` (µs since the epoch) down in a zone `offset` seconds east of UTC.
#[cfg(test)]
pub(crate) fn civil(us: i64, offset: i32) -> Civil {
    civil_with(us, offset, civil_from_days)
}

fn civil_with(us: i64, offset: i32, date: impl FnOnce(i64) -> (i64, u32, u32)) -> Civil {
    let local = us.saturating_add(i64::from(offset) * 1_000_000);
    let secs = local.div_euclid(1_000_000);
    let micros = local.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = date(days);
    Civil {
        year,
        month,
        day,
        hour: sod / 3600,
        min: sod / 60 % 60,
        sec: sod % 60,
        micros,
        offset,
    }
}

const EMPTY: u64 = u64::MAX;
const BUCKET_SECS: i64 = 900;
const SLOTS: usize = 8;

/// A destination's `tz` with a lock-free offset cache for `local`.
#[derive(Debug)]
pub(crate) struct Zone {
    tz: Tz,
    /// Direct-mapped: (15-minute bucket << 20) | (offset + 2^19). Zone transitions fall on
    /// 15-minute UTC boundaries, so one bucket has one offset.
    cache: [AtomicU64; SLOTS],
    /// Day number → date, `(days as u32) << 32 | year << 16 | month << 8 | day`, two slots
    /// (send day and event day): the date arithmetic is the costly part of a stamp.
    dates: [AtomicU64; 2],
}

impl Zone {
    pub(crate) fn new(tz: Tz) -> Self {
        Zone {
            tz,
            cache: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
            dates: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
        }
    }

    /// True when RFC 5424 stamps end in `Z`.
    pub(crate) fn is_utc(&self) -> bool {
        self.tz == Tz::Utc
    }

    /// Offset east of UTC, in seconds, at `us` µs since the epoch.
    pub(crate) fn offset_at(&self, us: i64) -> i32 {
        match self.tz {
            Tz::Utc => 0,
            Tz::Fixed(s) => s,
            Tz::Local => self.local_offset(us.div_euclid(1_000_000)),
        }
    }

    fn local_offset(&self, secs: i64) -> i32 {
        let bucket = secs.div_euclid(BUCKET_SECS);
        let slot = &self.cache[bucket.rem_euclid(SLOTS as i64) as usize];
        let v = slot.load(Ordering::Relaxed);
        if v != EMPTY && (v as i64) >> 20 == bucket {
            return (v & 0xF_FFFF) as i32 - (1 << 19);
        }
        let off = DateTime::from_timestamp(secs, 0)
            .map(|utc| Local.offset_from_utc_datetime(&utc.naive_utc()).fix())
            .map_or(0, |o| o.local_minus_utc());
        if (-(1 << 19)..(1 << 19)).contains(&off) && bucket.unsigned_abs() < (1 << 43) {
            let packed = ((bucket as u64) << 20) | ((off + (1 << 19)) as u64 & 0xF_FFFF);
            slot.store(packed, Ordering::Relaxed);
        }
        off
    }

    pub(crate) fn civil(&self, us: i64) -> Civil {
        civil_with(us, self.offset_at(us), |days| self.date(days))
    }

    fn date(&self, days: i64) -> (i64, u32, u32) {
        let slot = &self.dates[(days & 1) as usize];
        let v = slot.load(Ordering::Relaxed);
        if v != EMPTY && (v >> 32) as u32 == days as u32 && i64::from(days as i32) == days {
            return (
                ((v >> 16) & 0xFFFF) as i64,
                ((v >> 8) & 0xFF) as u32,
                (v & 0xFF) as u32,
            );
        }
        let (y, m, d) = civil_from_days(days);
        if (0..=0xFFFF).contains(&y) && i64::from(days as i32) == days {
            let packed = (u64::from(days as u32) << 32)
                | ((y as u64) << 16)
                | (u64::from(m) << 8)
                | u64::from(d);
            slot.store(packed, Ordering::Relaxed);
        }
        (y, m, d)
    }
}

/// A stamp is put together here and appended with one `put_slice`: its dozen small appends
/// each checked the buffer's capacity (about a third of an RFC 5424 header's instructions).
struct Stamp {
    b: [u8; 40],
    n: usize,
}

impl Stamp {
    fn new() -> Self {
        Stamp { b: [0; 40], n: 0 }
    }

    /// At most 40 bytes in all: the longest stamp is the 32 of RFC 5424.
    #[inline(always)]
    fn push(&mut self, s: &[u8]) {
        self.b[self.n..self.n + s.len()].copy_from_slice(s);
        self.n += s.len();
    }

    /// Two digits, zero-padded.
    #[inline(always)]
    fn two(&mut self, v: u32) {
        self.push(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
    }

    /// `hh:mm:ss`.
    #[inline(always)]
    fn hms(&mut self, c: &Civil) {
        self.two(c.hour);
        self.push(b":");
        self.two(c.min);
        self.push(b":");
        self.two(c.sec);
    }

    fn put(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.b[..self.n]);
    }
}

/// RFC 5424 TIMESTAMP (`2022-06-16T12:44:15.123456+09:00`), fraction truncated to
/// `frac_digits`; the NILVALUE `-` outside years 0..9999, which RFC 3339 cannot write.
pub(crate) fn put_rfc5424(dst: &mut BytesMut, c: &Civil, frac_digits: u8, utc: bool) {
    if !(0..=9999).contains(&c.year) {
        dst.put_u8(b'-');
        return;
    }
    let mut st = Stamp::new();
    let y = c.year as u32;
    st.two(y / 100);
    st.two(y % 100);
    st.push(b"-");
    st.two(c.month);
    st.push(b"-");
    st.two(c.day);
    st.push(b"T");
    st.hms(c);
    if frac_digits > 0 {
        let mut f = [b'.', 0, 0, 0, 0, 0, 0];
        let mut m = c.micros;
        for d in f[1..].iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        st.push(&f[..=usize::from(frac_digits.min(6))]);
    }
    if utc {
        st.push(b"Z");
    } else {
        let o = c.offset;
        st.push(if o < 0 { b"-" } else { b"+" });
        let a = o.unsigned_abs();
        st.two(a / 3600);
        st.push(b":");
        st.two(a / 60 % 60);
    }
    st.put(dst);
}

/// RFC 3164 TIMESTAMP `Mmm dd hh:mm:ss`, the day padded with a space (`Aug  7`).
pub(crate) fn put_rfc3164(dst: &mut BytesMut, c: &Civil) {
    let mut st = Stamp::new();
    st.push(MONTHS[(c.month - 1) as usize]);
    st.push(b" ");
    if c.day < 10 {
        st.push(&[b' ', b'0' + c.day as u8]);
    } else {
        st.two(c.day);
    }
    st.push(b" ");
    st.hms(c);
    st.put(dst);
}

/// CEF `end` in the vendor form `MMM dd yyyy HH:mm:ss`, the day zero-padded (`Jun 08`).
pub(crate) fn put_cef_plura(dst: &mut BytesMut, c: &Civil) {
    let mut st = Stamp::new();
    st.push(MONTHS[(c.month - 1) as usize]);
    st.push(b" ");
    st.two(c.day);
    st.push(b" ");
    match c.year {
        // The caller writes years 0..=9999 only; four digits unpadded, as `put_u64` would.
        y @ 1000..=9999 => {
            let y = y as u32;
            st.two(y / 100);
            st.two(y % 100);
        }
        y => {
            st.put(dst);
            put_u64(dst, y.max(0) as u64);
            st = Stamp::new();
        }
    }
    st.push(b" ");
    st.hms(c);
    st.put(dst);
}

/// CEF `end` as milliseconds since the epoch.
pub(crate) fn put_epoch_ms(dst: &mut BytesMut, us: i64) {
    put_i64(dst, us.div_euclid(1000));
}

/// `registerDate` as epoch milliseconds (a JSON integer, or digits in a string).
pub(crate) fn parse_epoch_ms(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 17 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// RFC 3339 date-time with an offset (`2022-06-16T12:28:29.5+09:00`, `...Z`) → µs since the
/// epoch. `t`, `z` and a space separator are accepted as RFC 3339 §5.6 notes allow.
pub(crate) fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0i64,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // A leap second (:60) is folded onto :59, as RFC 5424 forbids writing :60.
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400
        + i64::from(h * 3600 + mi * 60 + sec.min(59))
        - offset;
    Some(secs * 1_000_000 + i64::from(micros))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut b = BytesMut::new();
        f(&mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn civil_round_trips_over_four_centuries() {
        for days in (-200_000..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn stamp_forms() {
        let us = parse_rfc3339_us("2022-06-08T08:02:40.123456+09:00").unwrap();
        let c = civil(us, 9 * 3600);
        assert_eq!(
            s(|b| put_rfc5424(b, &c, 6, false)),
            "2022-06-08T08:02:40.123456+09:00"
        );
        assert_eq!(s(|b| put_rfc3164(b, &c)), "Jun  8 08:02:40");
        assert_eq!(s(|b| put_cef_plura(b, &c)), "Jun 08 2022 08:02:40");
        let z = civil(us, 0);
        assert_eq!(
            s(|b| put_rfc5424(b, &z, 3, true)),
            "2022-06-07T23:02:40.123Z"
        );
        let neg = civil(us, -(3 * 3600 + 1800));
        assert_eq!(
            s(|b| put_rfc5424(b, &neg, 0, false)),
            "2022-06-07T19:32:40-03:30"
        );
        assert_eq!(s(|b| put_epoch_ms(b, us)), "1654642960123");
        assert_eq!(s(|b| put_rfc3164(b, &neg)), "Jun  7 19:32:40");
        let late = civil(parse_rfc3339_us("2022-12-31T23:59:59.5Z").unwrap(), 0);
        assert_eq!(s(|b| put_rfc3164(b, &late)), "Dec 31 23:59:59");
        assert_eq!(
            s(|b| put_rfc5424(b, &late, 1, true)),
            "2022-12-31T23:59:59.5Z"
        );
        // Years before 1000 keep the unpadded form of the CEF `end`.
        let old = Civil { year: 999, ..late };
        assert_eq!(s(|b| put_cef_plura(b, &old)), "Dec 31 999 23:59:59");
        assert_eq!(s(|b| put_rfc5424(b, &old, 0, true)), "0999-12-31T23:59:59Z");
    }

    #[test]
    fn negative_times_floor() {
        let c = civil(-1, 0);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.sec, c.micros),
            (1969, 12, 31, 23, 59, 999_999)
        );
    }

    #[test]
    fn parses_rfc3339_and_rejects_junk() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T09:00:00+09:00"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01t00:00:01.5z"), Some(1_500_000));
        assert_eq!(
            parse_rfc3339_us("1970-01-01T00:00:00.1234567Z"),
            Some(123_456)
        );
        for bad in [
            "",
            "2022-06-16",
            "2022-06-16T12:28:29",
            "2022-13-16T12:28:29Z",
            "2022-02-30T12:28:29Z",
            "2022-06-16T24:28:29Z",
            "2022-06-16T12:28:29+0900",
            "2022-06-16T12:28:29.Z",
            "2022-06-16T12:28:29+09:00x",
            "２０２２-06-16T12:28:29Z",
        ] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
        assert_eq!(parse_epoch_ms("1655349521000"), Some(1_655_349_521_000));
        assert_eq!(parse_epoch_ms("-5"), Some(-5));
        assert_eq!(parse_epoch_ms("1.5"), None);
        assert_eq!(parse_epoch_ms("1e3"), None);
    }

    #[test]
    fn zone_cache_agrees_with_chrono() {
        let z = Zone::new(Tz::Local);
        for us in [
            0i64,
            1_655_349_521_000_000,
            1_700_000_000_000_000,
            -86_400_000_000,
        ] {
            let want = Local
                .offset_from_utc_datetime(
                    &DateTime::from_timestamp(us / 1_000_000, 0)
                        .unwrap()
                        .naive_utc(),
                )
                .fix()
                .local_minus_utc();
            assert_eq!(z.offset_at(us), want);
            assert_eq!(z.offset_at(us), want, "cached");
        }
        assert_eq!(Zone::new(Tz::Fixed(-3600)).offset_at(0), -3600);
    }

    #[test]
    fn date_cache_matches_arithmetic() {
        let z = Zone::new(Tz::Utc);
        for us in [
            0i64,
            -1,
            86_399_999_999,
            86_400_000_000,
            1_655_349_521_000_000,
            i64::MIN / 2,
        ] {
            for _ in 0..2 {
                assert_eq!(z.civil(us), civil(us, 0), "{us}");
            }
        }
    }
}
