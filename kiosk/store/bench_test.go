package store

import (
	"fmt"
	"testing"
	"time"
)

// The figures of issue "kiosk/store", printed with their targets by
// scripts/bench-store.sh:
//
//	BenchmarkGenerate100k   ≤ 3 s     per engine
//	BenchmarkAllocate1000   ≤ 200 ms  per engine
//	BenchmarkStatus1M       ≤ 1 s     per engine (builds a 1,000,000-entry
//	                                   pool first: minutes, never in go test)
//
// Each reports its figure as a custom metric in milliseconds ("ms/op" is
// the same number; the metric makes the script's parsing explicit).

func benchOpen(b *testing.B, dsn string) *Store {
	b.Helper()
	s, err := Open(b.Context(), dsn, &Options{Key: pass("bench"), KDF: testKDF, Station: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func forEnginesB(b *testing.B, f func(b *testing.B, e engineCase)) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) { f(b, e) })
	}
}

// BenchmarkGenerate100k generates and stores 100,000 encrypted entries
// (random PID, PPS and new password each, one transaction) in a new store.
func BenchmarkGenerate100k(b *testing.B) {
	forEnginesB(b, func(b *testing.B, e engineCase) {
		var total, cpu time.Duration
		n := 0
		for b.Loop() {
			b.StopTimer()
			s := benchOpen(b, e.dsn(b))
			b.StartTimer()
			start, cpu0 := time.Now(), cpuTime()
			if _, err := s.Generate(b.Context(), GenerateSpec{Count: 100_000, Profile: "amt6-10"}); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			cpu += cpuTime() - cpu0
			n++
			b.StopTimer()
			s.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(n), "ms/100k")
		// This process's CPU time (not the PostgreSQL server's): a figure
		// that a busy machine disturbs less than the wall clock.
		b.ReportMetric(float64(cpu.Milliseconds())/float64(n), "cpu-ms/100k")
	})
}

// BenchmarkAllocate1000 draws 1,000-record sticks from a 100,000-entry pool.
func BenchmarkAllocate1000(b *testing.B) {
	forEnginesB(b, func(b *testing.B, e engineCase) {
		s := benchOpen(b, e.dsn(b))
		if _, err := s.Generate(b.Context(), GenerateSpec{Count: 100_000, Profile: "amt6-10"}); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		n := 0
		for b.Loop() {
			start := time.Now()
			_, es, err := s.AllocateStick(b.Context(), StickSpec{Label: fmt.Sprintf("b%d", n), Count: 1000, Profile: "amt6-10"})
			if err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			n++
			if len(es) != 1000 {
				b.Fatalf("got %d entries", len(es))
			}
			if n%90 == 0 { // keep the pool from running dry
				b.StopTimer()
				if _, err := s.Generate(b.Context(), GenerateSpec{Count: 100_000, Profile: "amt6-10"}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms/stick")
	})
}

// BenchmarkStatus1M reads pool status on a 1,000,000-entry pool with 200
// sticks of 1,000 records and 10 used-up sticks, i.e. what
// "provstick pool status" does.
func BenchmarkStatus1M(b *testing.B) {
	forEnginesB(b, func(b *testing.B, e engineCase) {
		s := benchOpen(b, e.dsn(b))
		ctx := b.Context()
		for i := 0; i < 10; i++ {
			if _, err := s.Generate(ctx, GenerateSpec{Count: 100_000, Profile: []string{"amt6-10", "amt2-5"}[i%2]}); err != nil {
				b.Fatal(err)
			}
		}
		for i := 0; i < 200; i++ {
			if _, _, err := s.AllocateStick(ctx, StickSpec{Label: fmt.Sprintf("s%03d", i), Count: 1000, Profile: "amt6-10"}); err != nil {
				b.Fatal(err)
			}
		}
		// Ten small sticks used up: the ones status must list.
		for i := 0; i < 10; i++ {
			_, es, err := s.AllocateStick(ctx, StickSpec{Label: fmt.Sprintf("low%d", i), Count: 10, Profile: "amt6-10"})
			if err != nil {
				b.Fatal(err)
			}
			for _, en := range es {
				if err := s.Consume(ctx, en.PID, Machine{UUID: fmt.Sprintf("00000000-0000-0000-%04x-%012x", i, en.Record)}, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		}
		var total time.Duration
		n := 0
		for b.Loop() {
			start := time.Now()
			st, err := s.Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			n++
			if len(st.Low) != 10 {
				b.Fatalf("got %d low sticks, want 10", len(st.Low))
			}
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms/status")
	})
}
