//! No library: the benchmark is `benches/hit_path.rs` (`cargo bench -p cache-benches`);
//! see BENCHMARKS.md.
