//go:build race

package chat

// raceEnabled: the race detector multiplies memory, so per-connection figures mean nothing.
const raceEnabled = true
