// Package benchkit measures choreo against raw franz-go doing the same
// work, in one process and in alternating rounds, on any cluster: it is
// what `choreo bench` runs.
//
// A run (Run) goes through up to four scenarios:
//
//   - produce: PublishAsync against kgo Produce of the same encoded bytes
//     and headers, and a synchronous Publish against ProduceSync, call by
//     call, with the latency of each;
//   - consume: a backlog of Avro events on many keys, through the choreo
//     consumer with its defaults against a kgo poll loop that decodes with
//     the same codec;
//   - slow: a 2 ms handler on one partition of 1,000 keys: per-key against
//     per-partition ordering, and a sequential kgo loop;
//   - latency: a two-hop choreography at a fixed rate, end to end.
//
// Every topic, consumer group and registry subject a run creates starts
// with the Env's prefix, unique to the run, and Env.Close removes them, so
// that runs on a shared cluster neither meet nor leave anything behind.
//
// A figure is only as good as the machine was quiet: each result carries
// the load average as its last round ended. Nothing here asserts a speed.
package benchkit
