//! Declared schedules: an expected load or a minimum of replicas per model between two cron
//! times, as KEDA's cron scaler offers (`start`, `end`, `timezone`; peers.md §3.2). Pure: the
//! caller passes the time (seconds since the Unix epoch; simulated seconds in simulation, so a
//! simulation starts on Thursday 1970-01-01 00:00 UTC).

use serde::{Deserialize, Serialize};

/// One declared window for one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleSpec", into = "ScheduleSpec")]
pub struct Schedule {
    pub model: String,
    pub start: Cron,
    pub end: Cron,
    /// Offset of the schedule's clock from UTC, seconds.
    pub utc_offset_s: i64,
    /// Fewest replicas of the model while the window is active.
    pub min_replicas: Option<u32>,
    /// Load to plan for (at least) while the window is active, req/s, all classes together.
    pub expected_rps: Option<f64>,
}

/// A schedule as written: cron expressions as text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub model: String,
    /// Five-field cron (minute hour day-of-month month day-of-week) when the window opens.
    pub start: String,
    /// Five-field cron when it closes.
    pub end: String,
    /// `UTC` (the default) or a fixed offset such as `+02:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_rps: Option<f64>,
}

impl TryFrom<ScheduleSpec> for Schedule {
    type Error = String;
    fn try_from(s: ScheduleSpec) -> Result<Self, String> {
        if s.model.trim().is_empty() {
            return Err("model: must name a model".into());
        }
        let start = Cron::parse(&s.start).map_err(|e| format!("start: {e}"))?;
        let end = Cron::parse(&s.end).map_err(|e| format!("end: {e}"))?;
        let utc_offset_s = match s.timezone.as_deref() {
            None => 0,
            Some(tz) => parse_offset(tz).map_err(|e| format!("timezone: {e}"))?,
        };
        if let Some(rps) = s.expected_rps
            && !(rps.is_finite() && (0.0..=1e6).contains(&rps))
        {
            return Err(format!("expected_rps: must be a number ≥ 0 and ≤ 1000000, got {rps}"));
        }
        if s.min_replicas.is_none() && s.expected_rps.is_none() {
            return Err("needs min_replicas or expected_rps (or both)".into());
        }
        Ok(Self {
            model: s.model,
            start,
            end,
            utc_offset_s,
            min_replicas: s.min_replicas,
            expected_rps: s.expected_rps,
        })
    }
}

impl From<Schedule> for ScheduleSpec {
    fn from(s: Schedule) -> Self {
        let timezone = (s.utc_offset_s != 0).then(|| {
            let sign = if s.utc_offset_s < 0 { '-' } else { '+' };
            let m = s.utc_offset_s.abs() / 60;
            format!("{sign}{:02}:{:02}", m / 60, m % 60)
        });
        Self {
            model: s.model,
            start: s.start.text,
            end: s.end.text,
            timezone,
            min_replicas: s.min_replicas,
            expected_rps: s.expected_rps,
        }
    }
}

impl Schedule {
    /// Whether the window is open at `t_s`: its latest start at or before `t_s` comes after its
    /// latest end (KEDA's cron scaler).
    pub fn active_at(&self, t_s: f64) -> bool {
        let local = t_s + self.utc_offset_s as f64;
        match (self.start.latest_at_or_before(local), self.end.latest_at_or_before(local)) {
            (Some(start), Some(end)) => start > end,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

fn parse_offset(tz: &str) -> Result<i64, String> {
    let tz = tz.trim();
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return Ok(0);
    }
    let err = || format!("must be UTC or a fixed offset such as +02:00, got {tz:?}");
    let (sign, rest) = match tz.as_bytes().first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => return Err(err()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(err)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(err());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// A five-field cron expression: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists.
#[derive(Clone, Debug, PartialEq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Standard cron: when both day fields are restricted, a day matching either one counts.
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("must have five fields (minute hour day month weekday), got {text:?}"));
        }
        let minutes = field(fields[0], 0, 59, "minute")?;
        let hours = field(fields[1], 0, 23, "hour")? as u32;
        let days = field(fields[2], 1, 31, "day of month")? as u32;
        let months = field(fields[3], 1, 12, "month")? as u16;
        let raw_weekdays = field(fields[4], 0, 7, "day of week")?;
        // 7 is Sunday too.
        let weekdays = ((raw_weekdays & 0x7f) | (raw_weekdays >> 7)) as u8;
        Ok(Self {
            text: text.trim().to_string(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    fn day_matches(&self, day: u32, month: u32, weekday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            (true, false) => by_day,
            (false, true) => by_weekday,
            (false, false) => true,
        }
    }

    /// The latest minute at or before `t_s` (seconds since the epoch, in the schedule's clock)
    /// that matches, within the last 366 days.
    pub fn latest_at_or_before(&self, t_s: f64) -> Option<f64> {
        if !t_s.is_finite() {
            return None;
        }
        let minute_of = (t_s / 60.0).floor() as i64;
        let mut day = minute_of.div_euclid(1440);
        let mut last_minute_of_day = minute_of.rem_euclid(1440);
        for _ in 0..=366 {
            let (_, month, dom) = civil_from_days(day);
            // 1970-01-01 was a Thursday (4).
            let weekday = (day + 4).rem_euclid(7) as u32;
            if self.day_matches(dom, month, weekday) {
                for m in (0..=last_minute_of_day).rev() {
                    let (h, mm) = ((m / 60) as u32, (m % 60) as u64);
                    if self.hours & (1 << h) != 0 && self.minutes & (1 << mm) != 0 {
                        return Some(((day * 1440 + m) * 60) as f64);
                    }
                }
            }
            day -= 1;
            last_minute_of_day = 1439;
        }
        None
    }
}

/// One cron field as a bit set over `lo..=hi`.
fn field(text: &str, lo: u64, hi: u64, name: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let err = || format!("{name}: cannot read {part:?} (numbers {lo}–{hi}, *, a-b, */n)");
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u64>().ok().filter(|&s| s > 0).ok_or_else(err)?),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?)
        } else {
            let a: u64 = range.parse().map_err(|_| err())?;
            (a, if step > 1 { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(err());
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(start: &str, end: &str, timezone: Option<&str>) -> Schedule {
        Schedule::try_from(ScheduleSpec {
            model: "chat".into(),
            start: start.into(),
            end: end.into(),
            timezone: timezone.map(Into::into),
            min_replicas: Some(2),
            expected_rps: None,
        })
        .expect("valid")
    }

    /// 2026-03-02 (a Monday) at hh:mm UTC.
    fn monday(h: i64, m: i64) -> f64 {
        // Days from 1970-01-01 to 2026-03-02.
        let day = 20_514;
        assert_eq!(civil_from_days(day), (2026, 3, 2));
        ((day * 1440 + h * 60 + m) * 60) as f64
    }

    #[test]
    fn a_weekday_business_hours_window_is_open_between_its_start_and_end() {
        let s = schedule("0 8 * * 1-5", "0 18 * * 1-5", None);
        assert!(!s.active_at(monday(7, 59)));
        assert!(s.active_at(monday(8, 0)));
        assert!(s.active_at(monday(17, 59)));
        assert!(!s.active_at(monday(18, 0)));
        // Sunday (the day before) is closed all day.
        assert!(!s.active_at(monday(12, 0) - 86_400.0));
    }

    #[test]
    fn a_fixed_offset_moves_the_window() {
        let s = schedule("0 8 * * *", "0 9 * * *", Some("+02:00"));
        // 08:00 at +02:00 is 06:00 UTC.
        assert!(s.active_at(monday(6, 30)));
        assert!(!s.active_at(monday(8, 30)));
    }

    #[test]
    fn steps_lists_and_sunday_as_seven_are_read() {
        let c = Cron::parse("*/15 9,17 * * 7").expect("valid");
        assert_eq!(c.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.weekdays, 1);
        assert_eq!(c.hours, (1 << 9) | (1 << 17));
        let latest = c.latest_at_or_before(monday(12, 0)).expect("a Sunday before");
        assert_eq!(latest, monday(17, 45) - 86_400.0);
    }

    #[test]
    fn bad_expressions_are_refused_with_the_field() {
        for (text, what) in
            [("0 8 * *", "five fields"), ("61 * * * *", "minute"), ("* 8-3 * * *", "hour"), ("*/0 * * * *", "minute")]
        {
            let e = Cron::parse(text).expect_err(text);
            assert!(e.contains(what), "{text}: {e}");
        }
        let spec = ScheduleSpec {
            model: "chat".into(),
            start: "0 8 * * *".into(),
            end: "0 9 * * *".into(),
            timezone: Some("Europe/Paris".into()),
            min_replicas: Some(1),
            expected_rps: None,
        };
        assert!(Schedule::try_from(spec).expect_err("named zones are not read").contains("timezone"));
    }
}
