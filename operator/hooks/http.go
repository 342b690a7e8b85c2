package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Request is the JSON body an HTTP hook receives.
type Request struct {
	Hook       string `json:"hook"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	Generation int64  `json:"generation"`
	Node       string `json:"node,omitempty"`
}

// DefaultTimeout bounds one try of a hook that gives no timeoutSeconds.
const DefaultTimeout = 30 * time.Second

// Caller makes HTTP hook calls, each in its own goroutine under a hard
// deadline (every try's timeout plus the pauses between tries), so a hook
// that hangs holds no reconcile worker: the VM's reconcile starts the call,
// looks again for its outcome, and is woken through Done when it is there.
// Calls live in this process only; after a restart a hook is called again,
// which is why hooks must be safe to repeat.
type Caller struct {
	client  *http.Client
	secrets client.Reader
	mu      sync.Mutex
	calls   map[key]*call
	// Done receives the VM of each call that returned.
	Done chan event.TypedGenericEvent[*novacronv1.VirtualMachine]
}

// key is one hook for one generation of one VM: a new start or stop (a
// changed spec) calls it again.
type key struct {
	uid        types.UID
	hook       string
	generation int64
}

type call struct {
	done chan struct{}
	err  error
}

// NewCaller makes a Caller whose calls go through client (Egress.Client) and
// whose headersFrom values secrets reads (nil: hooks that have some fail).
func NewCaller(client *http.Client, secrets client.Reader) *Caller {
	return &Caller{client: client, secrets: secrets, calls: map[key]*call{}, Done: make(chan event.TypedGenericEvent[*novacronv1.VirtualMachine], 64)}
}

// Call starts the VM's kind hook unless it already runs or ran for this
// generation, and says where it stands: running, or done with err.
func (c *Caller) Call(vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (running bool, err error) {
	k := key{uid: vm.UID, hook: kind, generation: vm.Generation}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.calls[k]; ok {
		select {
		case <-cl.done:
			return false, cl.err
		default:
			return true, nil
		}
	}
	for old := range c.calls {
		if old.uid == k.uid && old.hook == k.hook {
			delete(c.calls, old) // an earlier generation's outcome
		}
	}
	cl := &call{done: make(chan struct{})}
	c.calls[k] = cl
	go c.run(cl, vm.DeepCopy(), kind, hook)
	return true, nil
}

// Forget drops what is known of a VM's calls (it is gone). A call still in
// flight runs out its deadline and is dropped then.
func (c *Caller) Forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.calls {
		if k.uid == uid {
			delete(c.calls, k)
		}
	}
}

func (c *Caller) run(cl *call, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) {
	timeout := time.Duration(hook.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tries := int(hook.Retries) + 1
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(tries)*timeout+pauses(tries))
	defer cancel()
	headers, err := c.headers(ctx, vm, kind, hook.HTTP)
	if err == nil {
		err = c.tryAll(ctx, vm, kind, hook.HTTP, headers, timeout, tries)
	}
	cl.err = err
	close(cl.done)
	select { // a full channel leaves it to the VM's next reconcile
	case c.Done <- event.TypedGenericEvent[*novacronv1.VirtualMachine]{Object: vm}:
	default:
	}
}

// pause is the wait before a try after the first.
func pause(try int) time.Duration { return time.Duration(try) * 500 * time.Millisecond }

func pauses(tries int) time.Duration {
	var d time.Duration
	for t := 1; t < tries; t++ {
		d += pause(t)
	}
	return d
}

// headers are the hook's headers with those from Secrets, read once per call
// (not kept: a rotated token is used from the next call on). Which Secret is
// named but missing is said; what it holds never is.
func (c *Caller) headers(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, h *novacronv1.HTTPHook) (http.Header, error) {
	out := http.Header{}
	for k, v := range h.Headers {
		out.Set(k, v)
	}
	for i, from := range h.HeadersFrom {
		field := fmt.Sprintf("spec.template.spec.lifecycle.%s.http.headersFrom[%d]", kind, i)
		if c.secrets == nil {
			return nil, fmt.Errorf("%s hook: %s: this operator reads no Secrets for hooks", kind, field)
		}
		var s corev1.Secret
		if err := c.secrets.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: from.SecretName}, &s); err != nil {
			return nil, fmt.Errorf("%s hook: %s: reading Secret %s/%s: %w", kind, field, vm.Namespace, from.SecretName, err)
		}
		v, ok := s.Data[from.Key]
		if !ok {
			return nil, fmt.Errorf("%s hook: %s: Secret %s/%s has no key %q", kind, field, vm.Namespace, from.SecretName, from.Key)
		}
		out.Set(from.Name, strings.TrimRight(string(v), "\r\n"))
	}
	return out, nil
}

func (c *Caller) tryAll(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.HTTPHook, headers http.Header, timeout time.Duration, tries int) error {
	body, err := json.Marshal(Request{Hook: kind, Namespace: vm.Namespace, Name: vm.Name, UID: string(vm.UID), Generation: vm.Generation, Node: vm.Status.NodeName})
	if err != nil {
		return err
	}
	var last error
	for try := 0; try < tries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s hook: %w (last try: %v)", kind, ctx.Err(), last)
			case <-time.After(pause(try)):
			}
		}
		if last = c.try(ctx, hook, headers, body, timeout); last == nil {
			return nil
		}
	}
	return fmt.Errorf("%s hook failed after %d tries: %w", kind, tries, last)
}

// try makes one request. Its answer's body is never reported: the hook may
// point at something whose reply the tenant should not read.
func (c *Caller) try(ctx context.Context, h *novacronv1.HTTPHook, headers http.Header, body []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := h.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "novacron-operator")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s answered %s", method, h.URL, resp.Status)
	}
	return nil
}
