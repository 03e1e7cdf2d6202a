//! Cron schedules: croner patterns (5 or 6 fields, `L`, `W`, `#`, names, `@daily`…) evaluated in an IANA
//! time zone. Slots are UTC instants; DST gaps and overlaps follow croner's rules, the same as the
//! JavaScript croner that Vendure uses.

use crate::error::ConfigError;
use chrono::{DateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A parsed cron pattern bound to a time zone. Cheap to clone: parsed schedules are shared, so 100,000
/// tasks on a handful of patterns hold a handful of parsed patterns (croner's takes several KiB, mostly
/// its year bitfield).
#[derive(Clone)]
pub struct Schedule {
    parsed: Arc<Parsed>,
}

struct Parsed {
    pattern: String,
    timezone: Tz,
    cron: Cron,
}

/// Parsed schedules still in use, by (trimmed pattern, zone).
type Interned = HashMap<(String, Tz), Weak<Parsed>>;

fn interned() -> &'static Mutex<Interned> {
    static INTERNED: OnceLock<Mutex<Interned>> = OnceLock::new();
    INTERNED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("pattern", &self.parsed.pattern)
            .field("timezone", &self.parsed.timezone.name())
            .finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.parsed.pattern == other.parsed.pattern && self.parsed.timezone == other.parsed.timezone
    }
}

impl Schedule {
    /// Parses `pattern` (5 fields, or 6 with seconds first) for the IANA zone `timezone`.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, ConfigError> {
        let timezone = parse_timezone(timezone)?;
        Self::with_zone(pattern, timezone)
    }

    /// Parses `pattern` for an already parsed zone. Besides croner's own checks, refuses what a user most
    /// likely mistyped and croner would read otherwise: a step beyond its field, an empty list item, a
    /// name in the wrong field.
    pub fn with_zone(pattern: &str, timezone: Tz) -> Result<Self, ConfigError> {
        check_familiar(pattern.trim()).map_err(|reason| ConfigError::InvalidSchedule {
            pattern: pattern.to_owned(),
            reason,
        })?;
        Self::interned(pattern, timezone)
    }

    /// Parses a definition already registered in the store, with croner's checks only: a pattern an
    /// older version accepted stays readable (its report's next slot, the accounting of an enable).
    /// User input goes through [`Schedule::parse`].
    pub fn parse_registered(pattern: &str, timezone: &str) -> Result<Self, ConfigError> {
        Self::interned(pattern, parse_timezone(timezone)?)
    }

    fn interned(pattern: &str, timezone: Tz) -> Result<Self, ConfigError> {
        let trimmed = pattern.trim();
        let key = (trimmed.to_owned(), timezone);
        if let Some(parsed) = interned()
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).and_then(Weak::upgrade))
        {
            return Ok(Self { parsed });
        }
        let schedule = Self::parse_new(pattern, trimmed, timezone)?;
        if let Ok(mut cache) = interned().lock() {
            // Forget patterns nobody uses any more, now and then (amortised: when the map has doubled).
            if cache.len() >= 1024 && cache.len().is_power_of_two() {
                cache.retain(|_, parsed| parsed.strong_count() > 0);
            }
            cache.insert(key, Arc::downgrade(&schedule.parsed));
        }
        Ok(schedule)
    }

    fn parse_new(pattern: &str, trimmed: &str, timezone: Tz) -> Result<Self, ConfigError> {
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(ConfigError::InvalidSchedule {
                pattern: pattern.to_owned(),
                reason: format!("expected 5 or 6 fields, found {fields}"),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|error| ConfigError::InvalidSchedule {
                pattern: pattern.to_owned(),
                reason: error.to_string(),
            })?;
        let schedule = Self {
            parsed: Arc::new(Parsed {
                pattern: trimmed.to_owned(),
                timezone,
                cron,
            }),
        };
        // A pattern that parses but can never fire (30 February) is as useless as one that does not parse.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ConfigError::InvalidSchedule {
                pattern: pattern.to_owned(),
                reason: "the pattern never matches a date".to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The pattern as written (trimmed).
    pub fn pattern(&self) -> &str {
        &self.parsed.pattern
    }

    /// The time zone the pattern is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.parsed.timezone
    }

    /// The first slot strictly after `instant`, or `None` when the pattern has no further match.
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = instant.with_timezone(&self.parsed.timezone);
        self.parsed
            .cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The last slot at or before `instant`, or `None` when the pattern never matched before it.
    pub fn latest_at_or_before(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = instant.with_timezone(&self.parsed.timezone);
        self.parsed
            .cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|previous| previous.with_timezone(&Utc))
    }

    /// Up to `limit` slots in `(after, until]`, in order.
    pub fn slots_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut cursor = after;
        while slots.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    slots.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        slots
    }

    /// How many slots lie in `(after, until]`, in bounded work: whole local days, hours and minutes in
    /// which the pattern matches and the zone's offset does not change are counted by multiplication
    /// (a matching day of `H` hours × `M` minutes × `S` seconds holds `H·M·S` slots), so a month of
    /// per-second slots costs a few hundred steps, not 2.6 million. Units that contain a DST transition
    /// are walked slot by slot, so the count follows croner's DST rules exactly.
    pub fn count_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
        let tz = self.parsed.timezone;
        let pattern = &self.parsed.cron.pattern;
        let matching = |limit: u32, test: &dyn Fn(u32) -> bool| (0..limit).filter(|value| test(*value)).count() as u64;
        let seconds = matching(60, &|v| pattern.second_match(v).unwrap_or(false));
        let minutes = matching(60, &|v| pattern.minute_match(v).unwrap_or(false));
        let hours = matching(24, &|v| pattern.hour_match(v).unwrap_or(false));
        let one_second = chrono::Duration::seconds(1);
        let mut count = 0u64;
        let mut cursor = after;
        while let Some(slot) = self.next_after(cursor).filter(|slot| *slot <= until) {
            let local = slot.with_timezone(&tz).naive_local();
            // The local units holding `slot`, largest first, with the slots each holds when it matches.
            let day = local.date().and_time(chrono::NaiveTime::MIN);
            let hour = day + chrono::Duration::hours(i64::from(local.hour()));
            let minute = hour + chrono::Duration::minutes(i64::from(local.minute()));
            let units = [
                (day, chrono::Duration::days(1), hours * minutes * seconds),
                (hour, chrono::Duration::hours(1), minutes * seconds),
                (minute, chrono::Duration::minutes(1), seconds),
            ];
            let skipped = units.iter().find_map(|(start, length, slots)| {
                let start_utc = tz.from_local_datetime(start).single()?.with_timezone(&Utc);
                let end_utc = tz
                    .from_local_datetime(&(*start + *length))
                    .single()?
                    .with_timezone(&Utc);
                // Whole (no DST change inside), wholly after the cursor and wholly within `until`.
                let plain = end_utc - start_utc == *length;
                (plain && cursor < start_utc && end_utc - one_second <= until).then_some((end_utc - one_second, *slots))
            });
            match skipped {
                Some((last, slots)) => {
                    count += slots;
                    cursor = last;
                }
                None => {
                    count += 1;
                    cursor = slot;
                }
            }
        }
        count
    }

    /// The next `count` slots after `instant`.
    pub fn upcoming(&self, instant: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(count.min(1024));
        let mut cursor = instant;
        while slots.len() < count {
            match self.next_after(cursor) {
                Some(next) => {
                    slots.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        slots
    }

    /// A human-readable description of the pattern (croner's `describe`).
    pub fn describe(&self) -> String {
        self.parsed.cron.describe()
    }
}

/// A field of a cron pattern: its name in messages, its values, and the names it takes.
struct Field {
    name: &'static str,
    first: u32,
    last: u32,
    names: Option<&'static [&'static str]>,
}

const WEEKDAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// The six fields, seconds first (a 5-field pattern has the last five).
const FIELDS: [Field; 6] = [
    Field {
        name: "second",
        first: 0,
        last: 59,
        names: None,
    },
    Field {
        name: "minute",
        first: 0,
        last: 59,
        names: None,
    },
    Field {
        name: "hour",
        first: 0,
        last: 23,
        names: None,
    },
    Field {
        name: "day-of-month",
        first: 1,
        last: 31,
        names: None,
    },
    Field {
        name: "month",
        first: 1,
        last: 12,
        names: Some(MONTH_NAMES),
    },
    Field {
        name: "day-of-week",
        first: 0,
        last: 6,
        names: Some(WEEKDAY_NAMES),
    },
];

/// Refuses, in croner's kind of message (the field, the item, why), what croner 4 accepts but a user
/// most likely mistyped: a step larger than the field's range (croner fires it once: `*/61` minutes is
/// minute 0 only), an empty list item (`1,,2`, `1,`, `,1`: croner drops it), and a month name outside
/// the month field or a weekday name outside the day-of-week field (croner turns any name into its
/// number wherever it stands: `0 0 * MON *` would run in January). Nicknames (`@daily`) and patterns
/// of another length are left to croner. `?` is untouched: croner reads it as `*` in the two day
/// fields and refuses it elsewhere.
fn check_familiar(pattern: &str) -> Result<(), String> {
    let parts: Vec<&str> = pattern.split_whitespace().collect();
    let fields = match parts.len() {
        6 => &FIELDS[..],
        5 => &FIELDS[1..],
        _ => return Ok(()),
    };
    if pattern.starts_with('@') {
        return Ok(());
    }
    for (part, field) in parts.iter().zip(fields) {
        let name = field.name;
        // croner's `+` (day-of-month AND day-of-week) leads the day-of-week field.
        let body = match field.names {
            Some(names) if names == WEEKDAY_NAMES => part.strip_prefix('+').unwrap_or(part),
            _ => part,
        };
        if body.split(',').any(str::is_empty) {
            return Err(format!(
                "the {name} field {} has an empty list item (a stray comma)",
                crate::limits::echo(part)
            ));
        }
        for item in body.split(',') {
            let upper = item.to_ascii_uppercase();
            for (names, kind, home) in [
                (WEEKDAY_NAMES, "weekday", "day-of-week"),
                (MONTH_NAMES, "month", "month"),
            ] {
                if field.names == Some(names) {
                    continue;
                }
                if let Some(found) = names.iter().find(|candidate| upper.contains(*candidate)) {
                    return Err(format!(
                        "the {name} field {} holds the {kind} name {found}: {kind} names belong in the {home} field",
                        crate::limits::echo(item)
                    ));
                }
            }
            let step = item
                .split_once('/')
                .and_then(|(_, step)| step.split('#').next())
                .and_then(|step| step.parse::<u32>().ok());
            let values = field.last - field.first + 1;
            if let Some(step) = step.filter(|step| *step > values) {
                return Err(format!(
                    "the {name} field {} has step {step}, larger than the field's {values} values ({}-{}): it would \
                     fire once per {}",
                    crate::limits::echo(item),
                    field.first,
                    field.last,
                    match name {
                        "second" => "minute",
                        "minute" => "hour",
                        "hour" => "day",
                        "day-of-month" => "month",
                        "month" => "year",
                        _ => "week",
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Parses an IANA time zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, ConfigError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| ConfigError::UnknownTimezone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test instant")
    }

    #[test]
    fn parsed_patterns_are_shared_and_compared_by_value() {
        let a = Schedule::parse("*/7 * * * * *", "Europe/Paris").expect("valid");
        let b = Schedule::parse("  */7 * * * * * ", "Europe/Paris").expect("valid");
        let c = Schedule::parse("*/7 * * * * *", "UTC").expect("valid");
        assert!(
            Arc::ptr_eq(&a.parsed, &b.parsed),
            "one parsed pattern per (pattern, zone)"
        );
        assert!(!Arc::ptr_eq(&a.parsed, &c.parsed));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(b.pattern(), "*/7 * * * * *");
        // Once nobody holds it, a pattern is parsed afresh (and still equal).
        drop((a, b));
        let again = Schedule::parse("*/7 * * * * *", "Europe/Paris").expect("valid");
        assert_eq!(again.pattern(), "*/7 * * * * *");
        // Errors are not cached.
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
    }

    #[test]
    fn table_of_patterns() {
        let from = utc(2026, 1, 1, 0, 0, 0); // a Thursday
        let cases: &[(&str, &str, &[DateTime<Utc>])] = &[
            (
                "*/15 * * * *",
                "UTC",
                &[utc(2026, 1, 1, 0, 15, 0), utc(2026, 1, 1, 0, 30, 0)],
            ),
            (
                "*/20 * * * * *",
                "UTC",
                &[utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40)],
            ),
            ("@daily", "UTC", &[utc(2026, 1, 2, 0, 0, 0), utc(2026, 1, 3, 0, 0, 0)]),
            ("@hourly", "UTC", &[utc(2026, 1, 1, 1, 0, 0), utc(2026, 1, 1, 2, 0, 0)]),
            (
                "0 12 L * *",
                "UTC",
                &[utc(2026, 1, 31, 12, 0, 0), utc(2026, 2, 28, 12, 0, 0)],
            ),
            (
                "0 9 * * 5#2",
                "UTC",
                &[utc(2026, 1, 9, 9, 0, 0), utc(2026, 2, 13, 9, 0, 0)],
            ),
            (
                "0 9 15W * *",
                "UTC",
                &[utc(2026, 1, 15, 9, 0, 0), utc(2026, 2, 16, 9, 0, 0)],
            ),
            (
                "0 0 * JAN,MAR MON-FRI",
                "UTC",
                &[
                    utc(2026, 1, 1, 0, 0, 0) + chrono::Duration::days(1),
                    utc(2026, 1, 5, 0, 0, 0),
                ],
            ),
            (
                "0 9 * * *",
                "Europe/Berlin",
                &[utc(2026, 1, 1, 8, 0, 0), utc(2026, 1, 2, 8, 0, 0)],
            ),
        ];
        for (pattern, zone, expected) in cases {
            let schedule = Schedule::parse(pattern, zone).expect("valid pattern");
            assert_eq!(
                &schedule.upcoming(from, expected.len()),
                expected,
                "pattern {pattern} in {zone}"
            );
        }
    }

    #[test]
    fn dst_gap_in_europe_london() {
        // 2026-03-29: clocks jump from 01:00 to 02:00 local. 01:30 does not exist that day.
        let schedule = Schedule::parse("30 * * * *", "Europe/London").expect("valid");
        let slots = schedule.upcoming(utc(2026, 3, 28, 23, 45, 0), 3);
        // 00:30 GMT, then 02:30 BST (= 01:30 UTC): no slot is invented inside the gap.
        assert_eq!(
            slots,
            vec![
                utc(2026, 3, 29, 0, 30, 0),
                utc(2026, 3, 29, 1, 30, 0),
                utc(2026, 3, 29, 2, 30, 0)
            ]
        );
    }

    #[test]
    fn dst_overlap_in_europe_london_runs_hourly_pattern_per_real_hour() {
        // 2026-10-25: clocks go back from 02:00 BST to 01:00 GMT; local 01:xx happens twice.
        let schedule = Schedule::parse("30 * * * *", "Europe/London").expect("valid");
        let slots = schedule.upcoming(utc(2026, 10, 24, 23, 45, 0), 3);
        for pair in slots.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert_eq!(slots[0], utc(2026, 10, 25, 0, 30, 0));
    }

    #[test]
    fn a_month_of_per_second_slots_is_counted_without_walking_them() {
        let schedule = Schedule::parse("* * * * * *", "Europe/Berlin").expect("valid");
        // March 2026 holds Berlin's DST change (29 March: one local hour fewer).
        let after = utc(2026, 3, 1, 0, 0, 0) + chrono::Duration::milliseconds(500);
        let until = utc(2026, 3, 31, 0, 0, 0);
        let started = std::time::Instant::now();
        assert_eq!(schedule.count_between(after, until), 30 * 86_400);
        // Bounded work, not 2.6 million croner steps (a loose bound for unoptimised test builds).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let daily = Schedule::parse("0 2 * * *", "Europe/Berlin").expect("valid");
        // 02:00 does not exist on 29 March in Berlin; croner moves it, and the count follows croner.
        let walked = daily.slots_between(after, until, usize::MAX).len() as u64;
        assert_eq!(daily.count_between(after, until), walked);
        assert_eq!(schedule.count_between(until, after), 0);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(
            Schedule::parse("61 * * * *", "UTC"),
            Err(ConfigError::InvalidSchedule { .. })
        ));
        assert!(matches!(
            Schedule::parse("* * *", "UTC"),
            Err(ConfigError::InvalidSchedule { .. })
        ));
        assert!(matches!(
            Schedule::parse("* * * * *", "Mars/Olympus"),
            Err(ConfigError::UnknownTimezone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 30 2 *", "UTC"),
            Err(ConfigError::InvalidSchedule { .. })
        ));
    }

    /// Patterns a user most likely mistyped, which croner 4 alone accepts (a step over the field's range
    /// fires once; an empty list item is dropped; a name in the wrong field becomes a number there) or
    /// rejects without naming the field: each error names the field and the offending item.
    #[test]
    fn mistyped_patterns_name_the_field_and_the_item() {
        let cases: &[(&str, &str, &str)] = &[
            ("*/61 * * * *", "minute", "*/61"),
            ("*/61 * * * * *", "second", "*/61"),
            ("0 */61 * * * *", "minute", "*/61"),
            ("0-59/61 * * * *", "minute", "0-59/61"),
            ("0 */25 * * *", "hour", "*/25"),
            ("0 0 */32 * *", "day-of-month", "*/32"),
            ("0 0 1 */13 *", "month", "*/13"),
            ("0 0 * * */8", "day-of-week", "*/8"),
            ("1,,2 * * * *", "minute", "1,,2"),
            ("1, * * * *", "minute", "1,"),
            (",1 * * * *", "minute", ",1"),
            ("0 0 1,,15 * *", "day-of-month", "1,,15"),
            ("0 0 * * MON,", "day-of-week", "MON,"),
            ("0 0 * * JAN", "day-of-week", "JAN"),
            ("0 0 * * mon,jul", "day-of-week", "jul"),
            ("0 0 * MON *", "month", "MON"),
            ("0 0 * SAT-SUN *", "month", "SAT-SUN"),
            ("0 0 * * DEC", "day-of-week", "DEC"),
            ("0 MON * * *", "hour", "MON"),
        ];
        for (pattern, field, item) in cases {
            match Schedule::parse(pattern, "UTC") {
                Err(ConfigError::InvalidSchedule { reason, .. }) => assert!(
                    reason.contains(&format!("{field} field")) && reason.contains(&format!("\"{item}\"")),
                    "{pattern}: {reason}"
                ),
                other => panic!("{pattern} must be refused, got {other:?}"),
            }
        }
        // A definition an older version registered stays readable from the store, and reading it first
        // does not let user input through the shared cache of parsed patterns.
        assert!(Schedule::parse_registered("1, * * * *", "UTC").is_ok());
        assert!(Schedule::parse("1, * * * *", "UTC").is_err());
    }

    /// Everything croner reads as intended stays accepted, with the same slots: 5 and 6 fields, names,
    /// ranges, steps up to the field's size, `L`, `W`, `#`, `?` (croner's wildcard in the day fields),
    /// `+` (croner's day AND) and nicknames.
    #[test]
    fn familiar_patterns_keep_their_slots() {
        let from = utc(2026, 1, 1, 0, 0, 0); // a Thursday
        let cases: &[(&str, &[DateTime<Utc>])] = &[
            ("*/59 * * * *", &[utc(2026, 1, 1, 0, 59, 0), utc(2026, 1, 1, 1, 0, 0)]),
            ("*/60 * * * *", &[utc(2026, 1, 1, 1, 0, 0), utc(2026, 1, 1, 2, 0, 0)]),
            ("*/59 * * * * *", &[utc(2026, 1, 1, 0, 0, 59), utc(2026, 1, 1, 0, 1, 0)]),
            ("0 */23 * * *", &[utc(2026, 1, 1, 23, 0, 0), utc(2026, 1, 2, 0, 0, 0)]),
            ("0 0 */31 * *", &[utc(2026, 2, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0)]),
            ("0 0 1 */12 *", &[utc(2027, 1, 1, 0, 0, 0), utc(2028, 1, 1, 0, 0, 0)]),
            ("0 0 * * */7", &[utc(2026, 1, 4, 0, 0, 0), utc(2026, 1, 11, 0, 0, 0)]),
            ("0 0 ? * MON", &[utc(2026, 1, 5, 0, 0, 0), utc(2026, 1, 12, 0, 0, 0)]),
            ("0 0 1 * ?", &[utc(2026, 2, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0)]),
            ("0 0 ? * ?", &[utc(2026, 1, 2, 0, 0, 0), utc(2026, 1, 3, 0, 0, 0)]),
            (
                "0 0 0 ? JAN,jul sun",
                &[utc(2026, 1, 4, 0, 0, 0), utc(2026, 1, 11, 0, 0, 0)],
            ),
            (
                "0 0 * FEB-MAR MON-FRI",
                &[utc(2026, 2, 2, 0, 0, 0), utc(2026, 2, 3, 0, 0, 0)],
            ),
            ("0 0 * * SAT-SUN", &[utc(2026, 1, 3, 0, 0, 0), utc(2026, 1, 4, 0, 0, 0)]),
            (
                "0 9-17/4 * * 1-5",
                &[utc(2026, 1, 1, 9, 0, 0), utc(2026, 1, 1, 13, 0, 0)],
            ),
            ("5,10 0 * * *", &[utc(2026, 1, 1, 0, 5, 0), utc(2026, 1, 1, 0, 10, 0)]),
            ("0 12 L * *", &[utc(2026, 1, 31, 12, 0, 0), utc(2026, 2, 28, 12, 0, 0)]),
            ("0 0 LW * *", &[utc(2026, 1, 30, 0, 0, 0), utc(2026, 2, 27, 0, 0, 0)]),
            ("0 9 15W * *", &[utc(2026, 1, 15, 9, 0, 0), utc(2026, 2, 16, 9, 0, 0)]),
            ("0 9 * * FRI#2", &[utc(2026, 1, 9, 9, 0, 0), utc(2026, 2, 13, 9, 0, 0)]),
            ("0 9 * * 5L", &[utc(2026, 1, 30, 9, 0, 0), utc(2026, 2, 27, 9, 0, 0)]),
            ("0 0 13 * +FRI", &[utc(2026, 2, 13, 0, 0, 0), utc(2026, 3, 13, 0, 0, 0)]),
            ("@weekly", &[utc(2026, 1, 4, 0, 0, 0), utc(2026, 1, 11, 0, 0, 0)]),
        ];
        for (pattern, expected) in cases {
            let schedule = match Schedule::parse(pattern, "UTC") {
                Ok(schedule) => schedule,
                Err(error) => panic!("{pattern} must be accepted: {error}"),
            };
            assert_eq!(&schedule.upcoming(from, expected.len()), expected, "pattern {pattern}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const ZONES: &[&str] = &[
            "UTC",
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ];
        const COUNT_ZONES: &[&str] = &["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe"];
        const COUNT_PATTERNS: &[&str] = &[
            "*/7 * * * * *",
            "* * * * *",
            "*/5 * * * *",
            "30 1-3 * * *",
            "0 9 * * MON-FRI",
            "0,30 * 1,15 * *",
            "0 0 L * *",
        ];

        const PATTERNS: &[&str] = &[
            "* * * * *",
            "*/7 * * * *",
            "30 1-3 * * *",
            "0 2 * * 0",
            "15,45 */2 * * *",
            "0 0 L * *",
            "*/13 * * * * *",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]
            #[test]
            fn counting_agrees_with_walking_every_slot(
                zone in prop::sample::select(COUNT_ZONES),
                pattern in prop::sample::select(COUNT_PATTERNS),
                // Around the 2026 DST changes of the zones above, and elsewhere.
                start in prop::sample::select(&[
                    1_774_700_000i64, 1_792_800_000, 1_775_300_000, 1_800_000_000, 1_772_900_000, 1_793_450_000,
                    1_790_900_000,
                ][..]),
                offset in 0i64..200_000,
                span in 0i64..260_000,
                millis in 0i64..1000,
            ) {
                let schedule = Schedule::parse(pattern, zone).expect("valid");
                let after = DateTime::<Utc>::from_timestamp(start + offset, 0).expect("in range")
                    + chrono::Duration::milliseconds(millis);
                let until = after + chrono::Duration::seconds(span);
                let walked = schedule.slots_between(after, until, usize::MAX).len() as u64;
                prop_assert_eq!(schedule.count_between(after, until), walked);
            }

            #[test]
            fn next_is_strictly_increasing_and_matches(
                zone in prop::sample::select(ZONES),
                pattern in prop::sample::select(PATTERNS),
                start in 1_700_000_000i64..1_900_000_000i64,
            ) {
                let schedule = Schedule::parse(pattern, zone).expect("valid");
                let from = DateTime::<Utc>::from_timestamp(start, 0).expect("in range");
                let slots = schedule.upcoming(from, 20);
                prop_assert_eq!(slots.len(), 20);
                prop_assert!(slots[0] > from);
                for pair in slots.windows(2) {
                    prop_assert!(pair[0] < pair[1]);
                }
                // No slot is skipped: the next slot after (slot - 1 s) is the slot itself.
                for slot in &slots {
                    prop_assert_eq!(schedule.next_after(*slot - chrono::Duration::seconds(1)), Some(*slot));
                }
            }
        }
    }
}
