// Package browser runs headless Chromium for the web console's tests,
// screenshots and benchmark, driven over the DevTools protocol with
// chromedp. Every browser gets a fresh profile in its own directory and the
// flags for a machine whose only network is loopback: nothing in the
// background reaches out, so nothing waits on a lookup that cannot succeed.
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// EnvChromium names the Chromium binary to use instead of the one on PATH.
const EnvChromium = "BULKHEAD_CHROMIUM"

// ExecPath finds Chromium: EnvChromium, else chromium, chromium-browser or
// google-chrome on PATH. The error says how to install it.
func ExecPath() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found: run scripts/install-deps.sh (Debian package chromium) or set %s", EnvChromium)
}

// Browser is one running Chromium. Its methods are safe for concurrent use;
// each tab is a context of its own.
type Browser struct {
	ctx         context.Context // the browser's first target
	cancel      context.CancelFunc
	allocCancel context.CancelFunc
}

// Start launches Chromium with a profile under dir (which the caller
// removes) and a window of width × height. ctx bounds only the start.
func Start(ctx context.Context, dir string, width, height int) (*Browser, error) {
	path, err := ExecPath()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(width, height),
		chromedp.NoSandbox, // as root in a container; the pages are our own
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.Env("TZ=UTC"),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{allocCancel: allocCancel}
	b.ctx, b.cancel = chromedp.NewContext(allocCtx)
	// The browser lives as long as the context of its first Do: b.ctx, with
	// no deadline, so the start is bounded from outside.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(b.ctx) }()
	select {
	case err := <-started:
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("start Chromium (%s): %w", path, err)
		}
	case <-ctx.Done():
		b.Close()
		<-started
		return nil, fmt.Errorf("start Chromium (%s): %w", path, ctx.Err())
	}
	return b, nil
}

// Close stops Chromium and waits for it to exit.
func (b *Browser) Close() {
	b.cancel()
	b.allocCancel()
}

// Tab is one page in a browser context of its own: its storage (session,
// local, cookies) shared with no other tab.
type Tab struct {
	// Ctx is the tab's chromedp context, for chromedp.Do and chromedp.Run.
	Ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	console []string
}

// watch is injected into every document before its scripts run: it keeps
// the Content-Security-Policy violations the page reports, for tests.
const watch = `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || '') + ':' + e.lineNumber));`

// Tab opens a new tab within timeout. Close disposes of it.
func (b *Browser) Tab(timeout time.Duration) (*Tab, error) {
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t := &Tab{Ctx: ctx, cancel: cancel}
	// The first Do opens the target, which then lives as long as the
	// context of that call: the tab's own, not one with a deadline. So it
	// is bounded from outside.
	opened := make(chan error, 1)
	go func() { opened <- chromedp.Do(ctx) }()
	var err error
	select {
	case err = <-opened:
	case <-time.After(timeout):
		cancel()
		<-opened
		return nil, fmt.Errorf("open a tab: not done within %s", timeout)
	}
	if err == nil {
		err = chromedp.Listen(t.Ctx, t.event)
	}
	if err == nil {
		err = t.Do(timeout, chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
			_, err := cdp.Call(ctx, target, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: watch})
			return err
		}))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open a tab: %w", err)
	}
	return t, nil
}

// event keeps what the page logs and throws. It runs in chromedp's read
// loop: quick, no calls.
func (t *Tab) event(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		parts := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " "))
	case *runtime.EventExceptionThrown:
		line = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			line += " " + ev.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		line = fmt.Sprintf("log %s %s: %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
	default:
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.console) < 500 {
		t.console = append(t.console, line)
	}
}

// Console returns what the page logged and threw so far.
func (t *Tab) Console() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.console...)
}

// Close closes the tab and its browser context.
func (t *Tab) Close() { t.cancel() }

// deadline is ctx's error, worded, when it is what stopped an action.
func deadline(ctx context.Context, timeout time.Duration, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("not done within %s: %w", timeout, err)
	}
	return err
}

// Do runs actions in the tab within timeout.
func (t *Tab) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(t.Ctx, timeout)
	defer cancel()
	return deadline(ctx, timeout, chromedp.Do(ctx, actions...))
}

// Run runs one action in the tab within timeout and returns its value.
func Run[T any](t *Tab, timeout time.Duration, action chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(t.Ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	return v, deadline(ctx, timeout, err)
}

// Screenshot returns a PNG of the whole page.
func (t *Tab) Screenshot(timeout time.Duration) ([]byte, error) {
	return Run(t, timeout, chromedp.FullScreenshot(100))
}

// CSPViolations returns the Content-Security-Policy violations the current
// document reported.
func (t *Tab) CSPViolations(timeout time.Duration) ([]string, error) {
	return Run(t, timeout, chromedp.Evaluate[[]string](`window.__csp || []`))
}
