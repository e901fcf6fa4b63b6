//! Builds a preset world and generates a log into a counting sink, printing
//! timings: `cargo run --release -p watchnext-world --example generate --
//! [toy|default|large] [events] [popularity|random]`.

use std::time::Instant;

use watchnext_world::{CountingSink, LoggingPolicy, World, WorldConfig, generate_logs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let preset = args.next().unwrap_or_else(|| "default".into());
    let target: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let policy = match args.next().as_deref() {
        Some("random") => LoggingPolicy::RandomOrder,
        _ => LoggingPolicy::PopularityNoise { noise: 1.0 },
    };
    let config = WorldConfig::preset(&preset).ok_or("preset must be toy, default or large")?;
    let started = Instant::now();
    let world = World::build(&config)?;
    let build = started.elapsed();
    println!(
        "built {preset}: {} videos, {} users in {:.2} s",
        world.num_videos(),
        world.num_users(),
        build.as_secs_f64()
    );
    let started = Instant::now();
    let mut sink = CountingSink::default();
    let summary = generate_logs(&world, policy, target, &mut sink, true)?;
    let generate = started.elapsed().as_secs_f64();
    println!("generated {} events in {generate:.2} s ({:.0} events/s)", sink.events, sink.events as f64 / generate);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
