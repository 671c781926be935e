//! FAT timestamps: Unix seconds ↔ the packed `DIR_WrtDate`/`DIR_WrtTime` words.
//!
//! FAT stores local calendar time with 2-second resolution from 1980-01-01 to 2107-12-31
//! (fatgen103 "Date and Time Formats"). We store UTC, because a build has no time zone: the
//! same tree must give the same bytes everywhere. Times outside the range are clamped to it.
//!
//! - date: bits 15–9 years since 1980 (0–127), bits 8–5 month (1–12), bits 4–0 day (1–31).
//! - time: bits 15–11 hours (0–23), bits 10–5 minutes (0–59), bits 4–0 seconds / 2 (0–29).

// Reading parses untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

const SECS_PER_DAY: i64 = 86_400;

/// 1980-01-01T00:00:00Z, the first time FAT can store.
pub(crate) const FAT_MIN_UNIX: i64 = 315_532_800;

/// 2107-12-31T23:59:58Z, the last time FAT can store (`days_from_civil(2107, 12, 31)` is
/// 50_404 days; pinned by a test).
pub(crate) const FAT_MAX_UNIX: i64 = 4_354_819_198;

// The calendar arithmetic below is checked: its inputs are bounded (FAT fields are at most
// 7 bits of year, clamped Unix times), so `None` never happens for them, but an unchecked
// operation would be one more place to prove that by hand.

/// Days since 1970-01-01 of a proleptic Gregorian date (the era/day-of-era method: years
/// are shifted to start in March so the leap day ends the year).
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let y = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.checked_sub(era.checked_mul(400)?)?;
    let month_from_march = i64::from(month.checked_add(9)? % 12);
    let day_of_year = 153i64
        .checked_mul(month_from_march)?
        .checked_add(2)?
        .checked_div(5)?
        .checked_add(i64::from(day))?
        .checked_sub(1)?;
    let day_of_era = year_of_era
        .checked_mul(365)?
        .checked_add(year_of_era / 4)?
        .checked_sub(year_of_era / 100)?
        .checked_add(day_of_year)?;
    era.checked_mul(146_097)?
        .checked_add(day_of_era)?
        .checked_sub(719_468)
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> Option<(i64, u32, u32)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let day_of_era = z.checked_sub(era.checked_mul(146_097)?)?;
    let year_of_era = day_of_era
        .checked_sub(day_of_era / 1460)?
        .checked_add(day_of_era / 36_524)?
        .checked_sub(day_of_era / 146_096)?
        / 365;
    let day_of_year = day_of_era.checked_sub(
        365i64
            .checked_mul(year_of_era)?
            .checked_add(year_of_era / 4)?
            .checked_sub(year_of_era / 100)?,
    )?;
    let month_from_march = 5i64.checked_mul(day_of_year)?.checked_add(2)? / 153;
    let day = day_of_year
        .checked_sub(153i64.checked_mul(month_from_march)?.checked_add(2)? / 5)?
        .checked_add(1)?;
    let month = if month_from_march < 10 {
        month_from_march.checked_add(3)?
    } else {
        month_from_march.checked_sub(9)?
    };
    let year = year_of_era
        .checked_add(era.checked_mul(400)?)?
        .checked_add(i64::from(month <= 2))?;
    Some((year, u32::try_from(month).ok()?, u32::try_from(day).ok()?))
}

/// A FAT (date, time) pair for `unix` seconds, clamped to 1980..=2107 and rounded down to
/// an even second. `None` only if the calendar arithmetic failed, which the clamp rules out
/// (a test covers both ends of the range and `i64::MIN`/`MAX`).
pub(crate) fn to_fat(unix: i64) -> Option<(u16, u16)> {
    let t = unix.clamp(FAT_MIN_UNIX, FAT_MAX_UNIX);
    let days = t.div_euclid(SECS_PER_DAY);
    let secs = t.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days)?;
    let years = u16::try_from(year.checked_sub(1980)?).ok()?;
    let (month, day) = (u16::try_from(month).ok()?, u16::try_from(day).ok()?);
    let hours = u16::try_from(secs / 3600).ok()?;
    let minutes = u16::try_from(secs / 60 % 60).ok()?;
    let halves = u16::try_from(secs % 60 / 2).ok()?;
    // Each value is within its field after the clamp: years 0..=127, hours 0..=23, ….
    if years > 127 || month > 12 || day > 31 {
        return None;
    }
    Some((years << 9 | month << 5 | day, hours << 11 | minutes << 5 | halves))
}

/// The Unix time of a FAT (date, time) pair, or `None` when a field is out of range
/// (month 0, day 0, hour 24, …), which some tools write for "no time".
pub(crate) fn from_fat(date: u16, time: u16) -> Option<i64> {
    let year = 1980i64.checked_add(i64::from(date >> 9))?;
    let month = u32::from(date >> 5 & 0x0F);
    let day = u32::from(date & 0x1F);
    let hours = i64::from(time >> 11);
    let minutes = i64::from(time >> 5 & 0x3F);
    let seconds = i64::from(time & 0x1F).checked_mul(2)?;
    if !(1..=12).contains(&month) || day == 0 || hours > 23 || minutes > 59 || seconds > 58 {
        return None;
    }
    days_from_civil(year, month, day)?
        .checked_mul(SECS_PER_DAY)?
        .checked_add(hours.checked_mul(3600)?)?
        .checked_add(minutes.checked_mul(60)?)?
        .checked_add(seconds)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(to_fat(FAT_MIN_UNIX), Some((0x0021, 0)));
        assert_eq!(
            days_from_civil(2107, 12, 31).map(|d| d * SECS_PER_DAY + SECS_PER_DAY - 2),
            Some(FAT_MAX_UNIX)
        );
        // 2024-02-29T13:37:59Z → 2024-02-29 13:37:58
        let t = 1_709_213_879;
        let (d, tm) = to_fat(t).unwrap();
        assert_eq!(d, (44 << 9) | (2 << 5) | 29);
        assert_eq!(tm, (13 << 11) | (37 << 5) | 29);
        assert_eq!(from_fat(d, tm), Some(t - 1));
    }

    #[test]
    fn clamps_to_the_fat_range() {
        assert_eq!(to_fat(0), to_fat(FAT_MIN_UNIX));
        assert_eq!(to_fat(i64::MIN), to_fat(FAT_MIN_UNIX));
        assert_eq!(to_fat(i64::MAX), to_fat(FAT_MAX_UNIX));
        let (d, t) = to_fat(i64::MAX).unwrap();
        assert_eq!(from_fat(d, t), Some(FAT_MAX_UNIX));
    }

    #[test]
    fn round_trips_every_even_second_sample() {
        let mut t = FAT_MIN_UNIX;
        while t < FAT_MAX_UNIX {
            let (d, tm) = to_fat(t).unwrap();
            assert_eq!(from_fat(d, tm), Some(t - t.rem_euclid(2)), "{t}");
            t += 7_777_777;
        }
    }

    #[test]
    fn invalid_fields_have_no_time() {
        assert_eq!(from_fat(0, 0), None);
        assert_eq!(from_fat(0x0021, 24 << 11), None);
        assert_eq!(from_fat(0x0021, 30), None);
    }
}
