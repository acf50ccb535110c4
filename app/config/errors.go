package config

import (
	"errors"
	"strings"
)

// Problem is one bad configuration value: the key, where the value came from
// when that is known, and what is wrong with it.
type Problem struct {
	Key    string
	Source string
	Msg    string
}

func (p Problem) String() string {
	if p.Source != "" {
		return p.Key + " (from " + p.Source + "): " + p.Msg
	}
	return p.Key + ": " + p.Msg
}

// Error is every problem found in the configuration. Its message is one line.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "configuration: " + strings.Join(parts, "; ")
}

func (e *Error) add(key, msg string) {
	e.Problems = append(e.Problems, Problem{Key: key, Msg: msg})
}

func (e *Error) addFrom(key, source, msg string) {
	e.Problems = append(e.Problems, Problem{Key: key, Source: source, Msg: msg})
}

func (e *Error) err() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// Errorf returns an *Error with one problem for key. Providers outside this
// package use it for configuration they reject, so that it too ends the
// process with exit status 2.
func Errorf(key, msg string) error {
	return &Error{Problems: []Problem{{Key: key, Msg: msg}}}
}

// IsConfigError reports whether err is, or wraps, a configuration error.
func IsConfigError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
