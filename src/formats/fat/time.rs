//! FAT timestamps: Unix seconds ↔ the packed `DIR_WrtDate`/`DIR_WrtTime` words.
//!
//! FAT stores local calendar time with 2-second resolution from 1980-01-01 to 2107-12-31
//! (fatgen103 "Date and Time Formats"). We store UTC, because a build has no time zone: the
//! same tree must give the same bytes everywhere. Times outside the range are clamped to it.
//!
//! - date: bits 15–9 years since 1980 (0–127), bits 8–5 month (1–12), bits 4–0 day (1–31).
//! - time: bits 15–11 hours (0–23), bits 10–5 minutes (0–59), bits 4–0 seconds / 2 (0–29).

const SECS_PER_DAY: i64 = 86_400;

/// 1980-01-01T00:00:00Z, the first time FAT can store.
pub(crate) const FAT_MIN_UNIX: i64 = 315_532_800;

/// 2107-12-31T23:59:58Z, the last time FAT can store.
pub(crate) fn fat_max_unix() -> i64 {
    days_from_civil(2107, 12, 31) * SECS_PER_DAY + SECS_PER_DAY - 2
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era/day-of-era method: years
/// are shifted to start in March so the leap day ends the year).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

/// A FAT (date, time) pair for `unix` seconds, clamped to 1980..=2107 and rounded down to
/// an even second.
pub(crate) fn to_fat(unix: i64) -> (u16, u16) {
    let t = unix.clamp(FAT_MIN_UNIX, fat_max_unix());
    let days = t.div_euclid(SECS_PER_DAY);
    let secs = t.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // year - 1980 is 0..=127 after clamping, so every field fits its bits.
    let date = ((year - 1980) as u16) << 9 | (month as u16) << 5 | day as u16;
    let time = ((secs / 3600) as u16) << 11 | ((secs / 60 % 60) as u16) << 5 | (secs % 60 / 2) as u16;
    (date, time)
}

/// The Unix time of a FAT (date, time) pair, or `None` when a field is out of range
/// (month 0, day 0, hour 24, …), which some tools write for "no time".
pub(crate) fn from_fat(date: u16, time: u16) -> Option<i64> {
    let year = 1980 + i64::from(date >> 9);
    let month = u32::from(date >> 5 & 0x0F);
    let day = u32::from(date & 0x1F);
    let hours = i64::from(time >> 11);
    let minutes = i64::from(time >> 5 & 0x3F);
    let seconds = i64::from(time & 0x1F) * 2;
    if !(1..=12).contains(&month) || day == 0 || hours > 23 || minutes > 59 || seconds > 58 {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECS_PER_DAY + hours * 3600 + minutes * 60 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(to_fat(FAT_MIN_UNIX), (0x0021, 0));
        // 2024-02-29T13:37:59Z → 2024-02-29 13:37:58
        let t = 1_709_213_879;
        let (d, tm) = to_fat(t);
        assert_eq!(d, (44 << 9) | (2 << 5) | 29);
        assert_eq!(tm, (13 << 11) | (37 << 5) | 29);
        assert_eq!(from_fat(d, tm), Some(t - 1));
        assert_eq!(fat_max_unix(), 4_354_819_198);
    }

    #[test]
    fn clamps_to_the_fat_range() {
        assert_eq!(to_fat(0), to_fat(FAT_MIN_UNIX));
        assert_eq!(to_fat(i64::MIN), to_fat(FAT_MIN_UNIX));
        assert_eq!(to_fat(i64::MAX), to_fat(fat_max_unix()));
        let (d, t) = to_fat(i64::MAX);
        assert_eq!(from_fat(d, t), Some(fat_max_unix()));
    }

    #[test]
    fn round_trips_every_even_second_sample() {
        let mut t = FAT_MIN_UNIX;
        while t < fat_max_unix() {
            let (d, tm) = to_fat(t);
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
