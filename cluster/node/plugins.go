package node

import (
	"context"

	"connectrpc.com/connect"

	"github.com/troupe-dev/troupe/actors/codes"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func (a *api) pluginInfos() []*troupev1.PluginInfo {
	var out []*troupev1.PluginInfo
	for _, in := range a.n.plugins.List() {
		out = append(out, in.Proto())
	}
	return out
}

func (a *api) List(context.Context, *connect.Request[troupev1.ListRequest]) (*connect.Response[troupev1.ListResponse], error) {
	return connect.NewResponse(&troupev1.ListResponse{Plugins: a.pluginInfos()}), nil
}

func (a *api) Reload(ctx context.Context, _ *connect.Request[troupev1.ReloadRequest]) (*connect.Response[troupev1.ReloadResponse], error) {
	resp := &troupev1.ReloadResponse{}
	// Load failures are part of the answer, not an API error: the failing
	// plugins keep their old versions serving.
	if err := a.n.plugins.Reload(ctx); err != nil {
		resp.Error = err.Error()
	}
	resp.Plugins = a.pluginInfos()
	return connect.NewResponse(resp), nil
}

// Call sends one call to an ambassador plugin through the node's plugin
// host, exactly as an actor's Runtime.Call does, and answers with the
// plugin's reply. Errors follow the node's contract (docs/errors.md): an
// unknown ambassador is not_found, a reject is failed_precondition, a
// plugin that fails or times out is unavailable or deadline_exceeded.
// TODO(auth): require the admin role once authentication exists.
func (a *api) Call(ctx context.Context, req *connect.Request[troupev1.CallRequest]) (*connect.Response[troupev1.CallResponse], error) {
	m := req.Msg
	switch {
	case m.GetName() == "":
		return nil, toConnect(&codes.Error{Code: codes.InvalidArgument, Message: "name: the ambassador's name is required"})
	case m.GetOperation() == "":
		return nil, toConnect(&codes.Error{Code: codes.InvalidArgument, Message: "operation: required"})
	}
	ct := m.GetContentType()
	if ct == "" {
		ct = "application/json"
	}
	reply, err := a.n.plugins.Call(ctx, m.GetName(), &troupev1.AmbassadorCall{
		Operation:   m.GetOperation(),
		Payload:     m.GetPayload(),
		ContentType: ct,
		Metadata:    m.GetMetadata(),
	})
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&troupev1.CallResponse{
		Payload:     reply.GetPayload(),
		ContentType: reply.GetContentType(),
		Metadata:    reply.GetMetadata(),
	}), nil
}
