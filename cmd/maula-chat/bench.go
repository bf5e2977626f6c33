package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/maula-ai/maula-chat/bench"
)

// runBench runs a benchmark scenario against this very binary started as the server.
func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	short := fs.Bool("short", false, "a quick run of each scenario (make bench)")
	out := fs.String("out", "bench-results", "directory for the JSON and markdown results")
	cpu := fs.String("cpuprofile", "", "write the load generator's CPU profile here (profile the server with MAULA_PPROF)")
	mem := fs.String("memprofile", "", "write the load generator's heap profile here")
	srvCPU := fs.String("server-cpuprofile", "", "write each started server's CPU profile here (path, path.2, ...)")
	streams := fs.String("streams", "", "concurrency levels for ttft and gap, comma-separated (e.g. 1,64); gap uses the last")
	per := fs.Int("per", 0, "requests per worker in ttft (0: the scenario's default)")
	turns := fs.Int("turns", 0, "recorded turns the admin scenario seeds (0: 1,000,000, or 100,000 with -short)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: maula-chat bench [flags] SCENARIO\n\nScenarios: %v, all\n\n", bench.Scenarios)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageErr(fmt.Errorf("name one scenario"))
	}
	exe, err := os.Executable()
	if err != nil {
		return runErr(err)
	}
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			return usageErr(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return runErr(err)
		}
		defer pprof.StopCPUProfile()
	}
	var levels []int
	for _, f := range strings.Split(*streams, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return usageErr(fmt.Errorf("--streams: %q is not a positive number", f))
		}
		levels = append(levels, n)
	}
	err = bench.Run(ctx, fs.Arg(0), bench.Config{Exe: exe, Short: *short, OutDir: *out, Out: os.Stdout, Streams: levels, PerWorker: *per, AdminTurns: *turns, ServerCPUProfile: *srvCPU})
	if *mem != "" {
		if f, ferr := os.Create(*mem); ferr == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	return err
}
