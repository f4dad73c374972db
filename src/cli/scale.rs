//! `opm scale NAME N`: grows or shrinks an instance group (`+N` and `-N`
//! count from the copies it has now), locally or on an agent through
//! `--server`, and prints the group as it is after.

use clap::Args;

use super::daemon::target;
use super::format::{print_json, table};
use super::{CliError, Format, Remote};
use crate::model::{ProcessInfo, ScaleRequest, ScaleResponse, Target};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The group (its name, or the id of one copy)
    #[arg(value_name = "ID|NAME")]
    pub target: String,
    /// The number of copies it should have, or +N / -N copies from now
    #[arg(value_name = "N|+N|-N", allow_hyphen_values = true)]
    pub count: String,
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

/// The count asked for: absolute, or relative to `now` copies.
pub fn wanted(count: &str, now: u32) -> Result<u32, String> {
    let bad = || format!("{count:?} is not a number of copies (e.g. 4, +2, -1)");
    let t = count.trim();
    if let Some(n) = t.strip_prefix('+') {
        return n
            .parse::<u32>()
            .map(|n| now.saturating_add(n))
            .map_err(|_| bad());
    }
    if let Some(n) = t.strip_prefix('-') {
        let n = n.parse::<u32>().map_err(|_| bad())?;
        return match now.checked_sub(n) {
            Some(c) if c > 0 => Ok(c),
            _ => Err(format!(
                "the group has {now} copies: it cannot lose {n} (`opm remove` removes it)"
            )),
        };
    }
    t.parse::<u32>().map_err(|_| bad())
}

pub async fn scale(a: ScaleArgs) -> Result<(), CliError> {
    let client = target(&a.remote)?;
    let relative = a.count.trim().starts_with(['+', '-']);
    let now = if relative {
        let path = format!("/daemon/info/{}", crate::model::encode_segment(&a.target));
        let info: ProcessInfo = client.get(&path).await?;
        info.group.len().max(1) as u32
    } else {
        0
    };
    let instances = wanted(&a.count, now).map_err(CliError::Usage)?;
    let r: ScaleResponse = client
        .post(
            "/daemon/scale",
            &ScaleRequest {
                id: Target::parse(&a.target),
                instances,
            },
        )
        .await?;
    if a.format == Format::Json {
        return print_json(&r);
    }
    for id in &r.removed {
        println!("✔ removed {} (id {id})", r.name);
    }
    for id in &r.added {
        println!("✔ added {} (id {id})", r.name);
    }
    println!("✔ {} runs {} instances", r.name, r.instances);
    println!("{}", table(&r.processes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_absolute_or_relative_to_the_copies_now() {
        assert_eq!(wanted("4", 2), Ok(4));
        assert_eq!(wanted("+2", 3), Ok(5));
        assert_eq!(wanted("-1", 3), Ok(2));
        assert!(wanted("-3", 3).is_err());
        assert!(wanted("lots", 3).is_err());
    }
}
