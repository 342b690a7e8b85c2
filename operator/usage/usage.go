// Package usage keeps each running VM's measured use (CPU cores, memory),
// from the domain stats the VM controller reads, for the rebalancer in the
// same process. The manager makes one Store and hands it to both.
package usage

import (
	"sync"
	"time"
)

// Usage is a running VM's measured use.
type Usage struct {
	Cores, MemoryBytes float64
}

// Store holds the latest Usage per VM (namespace/name), and the last CPU
// sample each rate is worked out from. The zero value is ready to use.
type Store struct {
	mu sync.Mutex
	vm map[string]*entry
}

type entry struct {
	usage   Usage
	cpu     time.Duration // the VM's total CPU time at the last sample
	at      time.Time
	sampled bool
}

// Observe records a sample of the VM's stats: its total CPU time and memory in
// use at a moment. It returns the VM's usage; cores is known (ok) from the
// second sample on, as the rate between the two.
func (s *Store) Observe(namespace, name string, cpu time.Duration, memoryBytes float64, at time.Time) (u Usage, coresKnown bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vm == nil {
		s.vm = map[string]*entry{}
	}
	e := s.vm[namespace+"/"+name]
	if e == nil {
		e = &entry{}
		s.vm[namespace+"/"+name] = e
	}
	e.usage.MemoryBytes = memoryBytes
	if dt := at.Sub(e.at); e.sampled && dt > 0 && cpu >= e.cpu {
		e.usage.Cores = float64(cpu-e.cpu) / float64(dt)
		coresKnown = true
	}
	e.cpu, e.at, e.sampled = cpu, at, true
	return e.usage, coresKnown
}

// Record sets a VM's usage directly (a measurement from elsewhere).
func (s *Store) Record(namespace, name string, u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vm == nil {
		s.vm = map[string]*entry{}
	}
	s.vm[namespace+"/"+name] = &entry{usage: u}
}

// Get is the VM's last measured use, if both figures are known.
func (s *Store) Get(namespace, name string) (Usage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.vm[namespace+"/"+name]
	if e == nil {
		return Usage{}, false
	}
	return e.usage, e.usage.Cores > 0 && e.usage.MemoryBytes > 0
}

// Forget drops a VM once it no longer runs.
func (s *Store) Forget(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vm, namespace+"/"+name)
}
