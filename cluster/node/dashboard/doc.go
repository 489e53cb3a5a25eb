// Package dashboard is the web dashboard every Troupe node serves (at /ui/
// on the API port): the node and its cluster members, plugins, projections,
// entity kinds and live entities, event and command rates, a live event tail
// (Server-Sent Events) filtered by kind and id, and a page per entity with
// its events and current state.
//
// It is an http.Handler built from a Source, which the node implements; the
// pages are rendered on the server from templates and refreshed by a small
// script, and every asset is embedded in the binary (nothing is fetched
// from elsewhere, no JavaScript framework). The dashboard only reads: it
// has no action that changes the node, so putting authentication in front
// of it (any http.Handler middleware; the live tail is a plain GET) is
// enough to protect it.
//
//	h, err := dashboard.New(dashboard.Config{Source: src})
//	if err != nil { ... }
//	mux.Handle("/ui/", h)
//
// Routes, under Config.Prefix ("/ui/"):
//
//	/ui/                          the overview page
//	/ui/entity/KIND/ID            an entity: its events and current state
//	/ui/entity?kind=KIND&id=ID    redirects to the entity's page
//	/ui/api/overview              the overview as JSON
//	/ui/api/entity/KIND/ID        an entity as JSON
//	/ui/api/tail?kind=&id=&last=  the live tail, text/event-stream
//	/ui/static/NAME               the embedded script and style sheet
//
// Anything else under the prefix, an unknown kind or an entity without
// events is a 404 page that says so.
package dashboard
