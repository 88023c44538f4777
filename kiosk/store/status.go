package store

import (
	"context"
	"fmt"
)

// LowPercent defines a stick "running low": fewer than LowPercent per cent
// of its records are still unconsumed (allocated and not yet known to be
// consumed or voided). A stick with no record left counts as running low.
// The stick rows that hold next PID/PPS entries (GiveNextPSK) are not
// sticks anyone carries and never count.
const LowPercent = 10

// Count is the number of entries of one profile in one state.
type Count struct {
	Profile string
	State   State
	N       int64
}

// Status is what "provstick pool status" shows.
type Status struct {
	Counts []Count // non-zero counts, by profile then life order of states
	Low    []Stick // sticks running low (see LowPercent), fewest left first
}

// Status reads the maintained counters and the sticks table; it never
// counts entries, so it costs the same on a pool of any size.
func (s *Store) Status(ctx context.Context) (Status, error) {
	var st Status
	rows, err := s.db.QueryContext(ctx, "SELECT profile, state, n FROM pool_counts WHERE n <> 0")
	if err != nil {
		return st, fmt.Errorf("reading pool counts: %w", err)
	}
	byKey := map[Count]int64{}
	profiles := map[string]bool{}
	for rows.Next() {
		var c Count
		var state string
		if err := rows.Scan(&c.Profile, &state, &c.N); err != nil {
			rows.Close()
			return st, fmt.Errorf("reading pool counts: %w", err)
		}
		byKey[Count{Profile: c.Profile, State: State(state)}] = c.N
		profiles[c.Profile] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("reading pool counts: %w", err)
	}
	order := append([]string(nil), Profiles...)
	for p := range profiles {
		if !ValidProfile(p) {
			order = append(order, p)
		}
	}
	for _, p := range order {
		for _, state := range States {
			if n := byKey[Count{Profile: p, State: state}]; n != 0 {
				st.Counts = append(st.Counts, Count{Profile: p, State: state, N: n})
			}
		}
	}
	rows, err = s.db.QueryContext(ctx, s.q(`SELECT label, recipe, profile, record_count, unconsumed, created_at, station FROM sticks
		WHERE unconsumed * 100 < record_count * ? AND recipe <> ? ORDER BY unconsumed, label`), LowPercent, NextPSKRecipe)
	if err != nil {
		return st, fmt.Errorf("reading sticks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k Stick
		var t int64
		if err := rows.Scan(&k.Label, &k.Recipe, &k.Profile, &k.Records, &k.Unconsumed, &t, &k.Station); err != nil {
			return st, fmt.Errorf("reading sticks: %w", err)
		}
		k.CreatedAt = fromMicros(t)
		st.Low = append(st.Low, k)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("reading sticks: %w", err)
	}
	return st, nil
}
