//go:build race

package reliability_test

// raceEnabled reports a build with the race detector, whose shadow memory
// makes resident memory figures meaningless.
const raceEnabled = true
