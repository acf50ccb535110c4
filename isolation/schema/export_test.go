package schema

import (
	"fmt"

	"github.com/google/uuid"
)

// LaneOf returns the lane of tenant id in s, or -1 when s keeps no lanes.
func LaneOf(s *Strategy, id uuid.UUID) int {
	if s.lanes == nil {
		return -1
	}
	return s.lanes.laneOf(id)
}

// WithoutLanes makes s acquire from its pool directly, as a strategy over
// a pool too small for lanes does.
func WithoutLanes(s *Strategy) {
	if s.lanes != nil {
		s.lanes.close()
		s.lanes = nil
	}
}

// LaneCounts returns how s's transactions found their connections.
func LaneCounts(s *Strategy) string {
	if s.lanes == nil {
		return "no lanes"
	}
	return fmt.Sprintf("%+v (%d lanes, %d connections at most)", s.lanes.counts(), s.lanes.n, s.lanes.max)
}
