package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Command runs the sidecar chain for one command delivery, in manifest
// order. Plugins may replace cmd's payload and add metadata; each plugin sees
// the changes of those before it. A rejection stops the chain and is returned
// as a Decision with Rejected set. The error is non-nil only when the host is
// closed or ctx ends while waiting for a free instance.
func (h *Host) Command(ctx context.Context, cmd *troupev1.Command) (Decision, error) {
	if h.closed.Load() {
		return Decision{}, ErrClosed
	}
	c := h.chain.Load()
	for _, v := range c.sidecars {
		if !v.man.Hooks.matchCommand(cmd.GetKind(), cmd.GetType()) {
			continue
		}
		d, err := h.traceSidecar(ctx, v, troupev1.Hook_HOOK_COMMAND, "", cmd)
		if err != nil || d.Rejected {
			return d, err
		}
	}
	return Decision{}, nil
}

// Event runs the sidecar chain for one event on its way to projection.
// Like Command, plugins may replace the payload and add metadata.
func (h *Host) Event(ctx context.Context, projection string, ev *troupev1.Event) (Decision, error) {
	if h.closed.Load() {
		return Decision{}, ErrClosed
	}
	kind, _, _ := strings.Cut(ev.GetStreamId(), "/")
	c := h.chain.Load()
	for _, v := range c.sidecars {
		if !v.man.Hooks.matchEvent(projection, kind, ev.GetType()) {
			continue
		}
		d, err := h.traceSidecar(ctx, v, troupev1.Hook_HOOK_EVENT, projection, ev)
		if err != nil || d.Rejected {
			return d, err
		}
	}
	return Decision{}, nil
}

// Topic runs the sidecar chain for one topic message on its way to
// subscribers.
func (h *Host) Topic(ctx context.Context, msg *troupev1.TopicMessage) (Decision, error) {
	if h.closed.Load() {
		return Decision{}, ErrClosed
	}
	c := h.chain.Load()
	for _, v := range c.sidecars {
		if !v.man.Hooks.matchTopic(msg.GetTopic()) {
			continue
		}
		d, err := h.traceSidecar(ctx, v, troupev1.Hook_HOOK_TOPIC, "", msg)
		if err != nil || d.Rejected {
			return d, err
		}
	}
	return Decision{}, nil
}

// call is Call (trace.go) without its span.
func (h *Host) call(ctx context.Context, name string, call *troupev1.AmbassadorCall) (*troupev1.AmbassadorReply, error) {
	if h.closed.Load() {
		return nil, ErrClosed
	}
	c := h.chain.Load()
	v := c.ambassadors[name]
	if v == nil {
		for _, sc := range c.sidecars {
			if sc.name == name {
				return nil, fmt.Errorf("%w: ambassador %q (%q is a sidecar: it runs on messages and cannot be called)", ErrNotFound, name, name)
			}
		}
		return nil, fmt.Errorf("%w: ambassador %q", ErrNotFound, name)
	}
	ctx, cancel := context.WithTimeout(ctx, v.man.Limits.Timeout)
	defer cancel()
	var reply *troupev1.AmbassadorReply
	var rejected *RejectedError
	err := h.run(ctx, v, troupev1.Hook_HOOK_CALL, "", call, func(v *version, vd *troupev1.Verdict) {
		if vd.GetReject() {
			rejected = &RejectedError{Plugin: v.name, Reason: vd.GetReason()}
			return
		}
		reply = vd.GetReply()
		if reply == nil {
			reply = &troupev1.AmbassadorReply{}
		}
		vd.Reply = nil // the caller owns reply now; the verdict is reused
	})
	switch {
	case err != nil:
		return nil, err
	case rejected != nil:
		return nil, rejected
	case reply == nil: // unloaded while we were calling
		return nil, fmt.Errorf("%w: ambassador %q", ErrNotFound, name)
	}
	return reply, nil
}

// runSidecar runs one sidecar on msg and applies its verdict, or its
// failure policy when it fails.
func (h *Host) runSidecar(ctx context.Context, v *version, hook troupev1.Hook, projection string, msg any) (Decision, error) {
	var d Decision
	err := h.run(ctx, v, hook, projection, msg, func(v *version, vd *troupev1.Verdict) {
		if vd.GetReject() {
			d = Decision{Rejected: true, Reason: vd.GetReason(), Plugin: v.name}
			if d.Reason == "" {
				d.Reason = "rejected by plugin " + v.name
			}
			d.Code, d.RetryAfter = rejectionHints(vd.GetMetadata())
			return
		}
		apply(msg, vd)
	})
	if err == nil {
		return d, nil
	}
	var ce *CallError
	if !errors.As(err, &ce) {
		return Decision{}, err // closed, or ctx ended while waiting
	}
	if v.man.OnFailure == FailPass {
		return Decision{}, nil
	}
	v.hooks[hook].rejects.Inc()
	return Decision{Rejected: true, Reason: "failed: " + ce.Err.Error(), Plugin: v.name, Err: ce}, nil
}

// run performs one call of plugin v, retrying on the replacing version
// when v was retired by a reload between the chain snapshot and the call
// (so that a swap drops no message). decide runs with the verdict while the
// instance is still held.
func (h *Host) run(ctx context.Context, v *version, hook troupev1.Hook, projection string, msg any, decide func(*version, *troupev1.Verdict)) error {
	var inst *instance
	for {
		var err error
		inst, err = v.acquire(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, errRetired) {
			if h.closed.Load() {
				return ErrClosed
			}
			nv := h.chain.Load().byName[v.name]
			if nv == nil {
				// Unloaded since the snapshot: treat as absent.
				return nil
			}
			v = nv
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		// Instantiation failed: a failure of this plugin.
		return h.failed(v, hook, err)
	}

	hm := &v.hooks[hook]
	hm.calls.Inc()
	start := time.Now()

	cctx, cancel := ctx, context.CancelFunc(nil)
	if v.metered {
		// Bounded by fuel and the deadline (meter.go), trusted or not:
		// no goroutine, no timer, no context per call.
		inst.fuel.Set(inst.meter.begin("call", start, v.man.Limits.Timeout, v.man.Limits.Fuel))
	} else if v.host.mode == meterCloseOnDone && !v.man.Trusted && hook != troupev1.Hook_HOOK_CALL { // Call set its own deadline
		cctx, cancel = context.WithTimeout(ctx, v.man.Limits.Timeout)
	}
	inst.req.Hook = hook
	inst.pctx.Projection = projection
	switch m := msg.(type) {
	case *troupev1.Command:
		inst.wCmd.Command = m
		inst.req.Message = &inst.wCmd
	case *troupev1.Event:
		inst.wEvent.Event = m
		inst.req.Message = &inst.wEvent
	case *troupev1.TopicMessage:
		inst.wTopic.Topic = m
		inst.req.Message = &inst.wTopic
	case *troupev1.AmbassadorCall:
		inst.wCall.Call = m
		inst.req.Message = &inst.wCall
	}
	vd, err := inst.call(cctx)
	if cancel != nil {
		cancel()
	}
	// Drop references to the caller's message.
	inst.wCmd.Command, inst.wEvent.Event, inst.wTopic.Topic, inst.wCall.Call = nil, nil, nil, nil
	inst.req.Message = nil
	inst.pending = nil
	if err == nil && vd.GetError() != "" {
		err = fmt.Errorf("%w: %s", ErrGuest, vd.GetError())
		decide = nil
	}
	if err == nil {
		decide(v, vd)
		if vd.GetReject() {
			hm.rejects.Inc()
		}
	}
	v.latency.Observe(time.Since(start).Seconds())
	// A guest-reported failure leaves the instance healthy; anything else
	// (trap, interrupt, ABI violation) discards it.
	v.release(inst, err == nil || errors.Is(err, ErrGuest))
	if err != nil {
		return h.failed(v, hook, err)
	}
	return nil
}

// failed records a plugin failure and wraps it in a *CallError.
func (h *Host) failed(v *version, hook troupev1.Hook, err error) error {
	ce := &CallError{Plugin: v.name, Err: err}
	h.metrics.failures.WithLabelValues(v.name, reasonLabel(err)).Inc()
	h.noteFailure(v.name, ce)
	v.log.Warn("plugin call failed", slog.String("hook", hookName(hook)),
		slog.String("policy", v.man.OnFailure.String()), slog.Any("err", err))
	return ce
}

// rejectionHints reads a rejecting verdict's code and retry hint.
func rejectionHints(md map[string]string) (code string, after time.Duration) {
	if c := md[MetaCode]; slices.Contains(RejectCodes, c) {
		code = c
	}
	if ms, err := strconv.ParseUint(md[MetaRetryAfterMS], 10, 32); err == nil {
		after = time.Duration(ms) * time.Millisecond
	}
	return code, after
}

// apply merges a verdict's replacement and metadata into the message.
func apply(msg any, vd *troupev1.Verdict) {
	r := vd.GetReplace()
	md := vd.GetMetadata()
	if r == nil && len(md) == 0 {
		return
	}
	switch m := msg.(type) {
	case *troupev1.Command:
		if r != nil {
			m.Payload = r.GetPayload()
			if r.GetContentType() != "" {
				m.ContentType = r.GetContentType()
			}
		}
		m.Metadata = merge(m.Metadata, md)
	case *troupev1.Event:
		if r != nil {
			m.Payload = r.GetPayload()
			if r.GetContentType() != "" {
				m.ContentType = r.GetContentType()
			}
		}
		m.Metadata = merge(m.Metadata, md)
	case *troupev1.TopicMessage:
		if r != nil {
			m.Payload = r.GetPayload()
			if r.GetContentType() != "" {
				m.ContentType = r.GetContentType()
			}
		}
		m.Metadata = merge(m.Metadata, md)
	}
	// The verdict is reused by the instance; the message now owns these.
	vd.Replace = nil
	vd.Metadata = nil
}

func merge(dst, src map[string]string) map[string]string {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]string, len(src))
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}
