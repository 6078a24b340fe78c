//! `ocx quality summary`: call quality and traffic figures per time bucket and group
//! (`GetQualitySummary`), as a table, JSON lines or CSV, and as an SVG chart of the poor-call
//! rate and the ASR over time, one line per group.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use ocx_client::{Client, pb};
use serde_json::json;

use crate::calls::{CallType, Direction};
use crate::output::{self, Format, enum_name, write_table};

/// `ocx quality ...`
#[derive(Debug, Subcommand)]
pub enum QualityCommand {
    /// Quality and traffic figures over a period: calls, ASR, NER, ACD, post-dial delay, the
    /// Call Quality Dashboard's poor call and stream rates, each metric's percentiles; per
    /// time bucket and per group. Rows without calls are not printed.
    Summary(SummaryArgs),
}

/// `ocx quality summary` flags.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Start of the period (RFC 3339 UTC); widened down to its whole hour.
    #[arg(long, value_parser = crate::values::rfc3339)]
    from: prost_types::Timestamp,
    /// End of the period, exclusive (RFC 3339 UTC); widened up to a whole hour.
    #[arg(long, value_parser = crate::values::rfc3339)]
    to: prost_types::Timestamp,
    /// The time buckets (UTC).
    #[arg(long, value_enum, default_value_t = Bucket::Day)]
    by: Bucket,
    /// Group by these dimensions, in this order (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    group_by: Vec<Dimension>,
    /// Only these trunks (FQDNs; repeat the flag for several).
    #[arg(long)]
    trunk: Vec<String>,
    /// Only these usage countries (ISO 3166-1 alpha-2).
    #[arg(long)]
    country: Vec<String>,
    /// Only these codecs (the first a call's streams name).
    #[arg(long)]
    codec: Vec<String>,
    /// Only these directions.
    #[arg(long, value_enum)]
    direction: Vec<Direction>,
    /// Only these call types.
    #[arg(long = "type", value_enum)]
    call_type: Vec<CallType>,
    /// Only domestic or only international calls.
    #[arg(long, value_enum)]
    destination: Vec<Destination>,
    /// The carrier (platform key: one carrier; leave out for every carrier together).
    #[arg(long, value_parser = crate::values::carrier_id)]
    carrier: Option<String>,
    /// Also draw the poor-call rate and the ASR over time, one line per group, into this SVG
    /// file (opens in a browser).
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// `--by`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bucket {
    /// The whole period: one row per group.
    None,
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
}

/// `--group-by`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dimension {
    /// The carrier's trunk (SBC FQDN).
    Trunk,
    /// The usage country.
    Country,
    /// Domestic or international.
    Destination,
    /// The call type.
    Type,
    /// Inbound or outbound.
    Direction,
    /// The first codec the call's streams name.
    Codec,
}

/// `--destination`
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Destination {
    /// Same country.
    Domestic,
    /// Another country.
    International,
}

impl Dimension {
    fn to_pb(self) -> pb::QualityDimension {
        match self {
            Dimension::Trunk => pb::QualityDimension::TrunkFqdn,
            Dimension::Country => pb::QualityDimension::UsageCountryCode,
            Dimension::Destination => pb::QualityDimension::DestinationContext,
            Dimension::Type => pb::QualityDimension::CallType,
            Dimension::Direction => pb::QualityDimension::Direction,
            Dimension::Codec => pb::QualityDimension::Codec,
        }
    }

    /// The column heading.
    fn heading(self) -> &'static str {
        match self {
            Dimension::Trunk => "TRUNK",
            Dimension::Country => "COUNTRY",
            Dimension::Destination => "DESTINATION",
            Dimension::Type => "TYPE",
            Dimension::Direction => "DIRECTION",
            Dimension::Codec => "CODEC",
        }
    }

    /// The row's value of this dimension, for people ("-" for none).
    fn value(self, r: &pb::QualitySummaryRow) -> String {
        let text = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        match self {
            Dimension::Trunk => text(&r.trunk_fqdn),
            Dimension::Country => text(&r.usage_country_code),
            Dimension::Destination => enum_name(
                r.destination_context().as_str_name(),
                "DESTINATION_CONTEXT_",
            ),
            Dimension::Type => enum_name(r.call_type().as_str_name(), "CALL_TYPE_"),
            Dimension::Direction => enum_name(r.direction().as_str_name(), "CALL_DIRECTION_"),
            Dimension::Codec => text(&r.codec),
        }
    }
}

/// The request the flags describe.
fn request(args: &SummaryArgs) -> pb::GetQualitySummaryRequest {
    let (start, end) = ocx_client::whole_hours(&args.from, &args.to);
    pb::GetQualitySummaryRequest {
        carrier_id: args.carrier.clone().unwrap_or_default(),
        start_time: Some(start),
        end_time: Some(end),
        bucket: match args.by {
            Bucket::None => pb::TimeBucket::Unspecified,
            Bucket::Hour => pb::TimeBucket::Hour,
            Bucket::Day => pb::TimeBucket::Day,
        } as i32,
        group_by: args.group_by.iter().map(|d| d.to_pb() as i32).collect(),
        filter: Some(pb::QualityFilter {
            trunk_fqdns: args.trunk.clone(),
            usage_country_codes: args.country.clone(),
            destination_contexts: args
                .destination
                .iter()
                .map(|d| match d {
                    Destination::Domestic => pb::DestinationContext::Domestic as i32,
                    Destination::International => pb::DestinationContext::International as i32,
                })
                .collect(),
            call_types: args.call_type.iter().map(|t| t.to_pb() as i32).collect(),
            directions: args.direction.iter().map(|d| d.to_pb() as i32).collect(),
            codecs: args.codec.clone(),
        }),
    }
}

/// Runs `ocx quality ...`.
pub async fn run(client: &Client, format: Format, command: QualityCommand) -> anyhow::Result<()> {
    match command {
        QualityCommand::Summary(args) => {
            let rows = client.quality_summary(request(&args)).await?;
            print(format, &args, &rows)?;
            if let Some(path) = &args.chart {
                chart(path, &args.group_by, &rows)?;
                eprintln!("chart written to {}", path.display());
            }
            Ok(())
        }
    }
}

/// A duration in seconds, 0 if unset ([`output::seconds`]).
fn secs(d: &Option<prost_types::Duration>) -> f64 {
    output::seconds(d).unwrap_or_default()
}

/// The row's bucket as RFC 3339 (UTC).
fn bucket(r: &pb::QualitySummaryRow) -> String {
    output::rfc3339(&r.bucket_start_time).unwrap_or_default()
}

/// The figures of a row, as (heading, value) for tables and CSV.
fn figures(r: &pb::QualitySummaryRow) -> Vec<(&'static str, String)> {
    let metric = |m: &Option<pb::MetricSummary>| m.unwrap_or_default();
    let (jitter, loss, rtt, mos) = (
        metric(&r.jitter_ms),
        metric(&r.packet_loss_rate),
        metric(&r.round_trip_time_ms),
        metric(&r.mos),
    );
    vec![
        ("CALLS", r.calls.to_string()),
        ("ANSWERED", r.answered_calls.to_string()),
        ("ASR", format!("{:.3}", r.asr)),
        ("NER", format!("{:.3}", r.ner)),
        ("ACD_S", format!("{:.1}", secs(&r.acd))),
        ("MINUTES", format!("{:.1}", r.connected_minutes)),
        ("PDD_P95_S", format!("{:.2}", secs(&r.post_dial_delay_p95))),
        ("POOR_CALLS", r.poor_calls.to_string()),
        ("POOR_CALL_RATE", format!("{:.3}", r.poor_call_rate)),
        ("POOR_STREAM_RATE", format!("{:.3}", r.poor_stream_rate)),
        ("JITTER_P90_MS", format!("{:.1}", jitter.p90)),
        ("LOSS_P90", format!("{:.4}", loss.p90)),
        ("RTT_P90_MS", format!("{:.0}", rtt.p90)),
        ("MOS_P50", format!("{:.2}", mos.p50)),
    ]
}

/// The JSON object of a row: every figure the server sent.
fn row_json(args: &SummaryArgs, r: &pb::QualitySummaryRow) -> serde_json::Value {
    let metric = |m: &Option<pb::MetricSummary>| {
        let m = m.unwrap_or_default();
        json!({"streams": m.streams, "mean": m.mean, "p50": m.p50, "p90": m.p90, "p99": m.p99})
    };
    let mut row = json!({
        "bucket_start_time": bucket(r),
        "calls": r.calls,
        "answered_calls": r.answered_calls,
        "failed_calls": r.failed_calls,
        "user_failed_calls": r.user_failed_calls,
        "asr": r.asr,
        "ner": r.ner,
        "connected_minutes": r.connected_minutes,
        "acd_seconds": secs(&r.acd),
        "post_dial_delay_calls": r.post_dial_delay_calls,
        "post_dial_delay_mean_seconds": secs(&r.post_dial_delay_mean),
        "post_dial_delay_p95_seconds": secs(&r.post_dial_delay_p95),
        "streams": r.streams,
        "classified_streams": r.classified_streams,
        "poor_streams": r.poor_streams,
        "poor_stream_rate": r.poor_stream_rate,
        "good_calls": r.good_calls,
        "poor_calls": r.poor_calls,
        "unclassified_calls": r.unclassified_calls,
        "poor_call_rate": r.poor_call_rate,
        "poor_due_to": r.poor_due_to.iter().map(|p| json!({
            "metric": enum_name(p.metric().as_str_name(), "QUALITY_METRIC_"),
            "calls": p.calls,
        })).collect::<Vec<_>>(),
        "jitter_ms": metric(&r.jitter_ms),
        "packet_loss_rate": metric(&r.packet_loss_rate),
        "round_trip_time_ms": metric(&r.round_trip_time_ms),
        "audio_degradation": metric(&r.audio_degradation),
        "concealed_samples_ratio": metric(&r.concealed_samples_ratio),
        "mos": metric(&r.mos),
    });
    for d in &args.group_by {
        row[d.heading().to_ascii_lowercase()] = json!(d.value(r));
    }
    row
}

/// Prints the rows: a table, JSON lines or CSV.
fn print(format: Format, args: &SummaryArgs, rows: &[pb::QualitySummaryRow]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if format == Format::Json {
        for r in rows {
            writeln!(out, "{}", row_json(args, r))?;
        }
        return Ok(());
    }
    let bucketed = args.by != Bucket::None;
    let mut headings: Vec<&str> = Vec::new();
    if bucketed {
        headings.push("BUCKET");
    }
    headings.extend(args.group_by.iter().map(|d| d.heading()));
    headings.extend(
        figures(&pb::QualitySummaryRow::default())
            .iter()
            .map(|(h, _)| *h),
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            if bucketed {
                cells.push(bucket(r));
            }
            cells.extend(args.group_by.iter().map(|d| d.value(r)));
            cells.extend(figures(r).into_iter().map(|(_, v)| v));
            cells
        })
        .collect();
    if format == Format::Csv {
        let mut csv = csv::Writer::from_writer(out);
        csv.write_record(headings.iter().map(|h| h.to_ascii_lowercase()))?;
        for row in &cells {
            csv.write_record(row)?;
        }
        return csv.flush();
    }
    write_table(&mut out, Some(&headings), &cells)
}

/// The label of a row's group: its grouped values joined, or "all calls".
fn label(group_by: &[Dimension], r: &pb::QualitySummaryRow) -> String {
    if group_by.is_empty() {
        return "all calls".to_owned();
    }
    group_by
        .iter()
        .map(|d| d.value(r))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A figure of a row, as a chart draws it.
type Figure = fn(&pb::QualitySummaryRow) -> f64;

/// The series of a chart: per group (in first-seen order), its points (hours since the first
/// bucket, value of `figure`).
fn series(
    group_by: &[Dimension],
    rows: &[pb::QualitySummaryRow],
    figure: Figure,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let start = rows
        .iter()
        .filter_map(|r| r.bucket_start_time.map(|t| t.seconds))
        .min()
        .unwrap_or(0);
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let name = label(group_by, r);
        let x = (r.bucket_start_time.map_or(start, |t| t.seconds) - start) as f64 / 3600.0;
        let point = (x, figure(r));
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name, vec![point])),
        }
    }
    series
}

/// Draws the poor-call rate and the ASR over time, one line per group, into `path` (SVG).
pub fn chart(
    path: &Path,
    group_by: &[Dimension],
    rows: &[pb::QualitySummaryRow],
) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let start = rows
        .iter()
        .filter_map(|r| r.bucket_start_time.map(|t| t.seconds))
        .min()
        .unwrap_or(0);
    let hours = rows
        .iter()
        .filter_map(|r| {
            r.bucket_start_time
                .map(|t| (t.seconds - start) as f64 / 3600.0)
        })
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    let figures: [(&str, Figure); 2] = [
        ("Poor-call rate", |r| r.poor_call_rate),
        ("ASR (answer-seizure ratio)", |r| r.asr),
    ];
    let x_label = |h: &f64| {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(
                u64::try_from(start + (*h * 3600.0) as i64).unwrap_or(0),
            );
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .get(5..16)
            .unwrap_or_default()
            .replace('T', " ")
    };
    for (panel, (title, figure)) in panels.iter().zip(figures) {
        let lines = series(group_by, rows, figure);
        let top = lines
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max)
            .max(0.01)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..hours, 0.0..top.min(1.05))?;
        chart
            .configure_mesh()
            .x_desc("UTC")
            .x_label_formatter(&x_label)
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .draw()?;
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
