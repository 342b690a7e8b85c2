package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// Suite is what a package's tests share: one API server, a scratch folder
// and a context that ends when the tests are done.
type Suite struct {
	Env *Env
	Dir string
	Ctx context.Context

	cleanups []func()
}

// Cleanup registers f to run after the package's tests, in reverse order of
// registration (as testing.T's does).
func (s *Suite) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }

// Main is a package's TestMain: it sets the logger, starts the API server,
// calls setUp (which starts what the package needs and registers its
// teardown), runs the tests and tears everything down. It returns the exit
// code for os.Exit.
func Main(m *testing.M, setUp func(*Suite) error, opts ...Option) int {
	SetLogger()
	env, err := Start(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Suite{Env: env, Ctx: ctx}
	defer func() {
		cancel()
		for i := len(s.cleanups) - 1; i >= 0; i-- {
			s.cleanups[i]()
		}
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	if s.Dir, err = os.MkdirTemp("", "novacron-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.Cleanup(func() { os.RemoveAll(s.Dir) })
	if err := setUp(s); err != nil {
		fmt.Fprintln(os.Stderr, "setting up:", err)
		return 1
	}
	return m.Run()
}
