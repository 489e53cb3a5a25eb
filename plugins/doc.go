// Package plugins hosts WebAssembly plugins: sidecars that see every
// command, event and topic message on its way (allow, reject with a reason,
// replace the payload, add metadata) and ambassadors that actors call by
// name to reach the outside world through the host's HTTP client.
//
// A plugin is NAME.wasm plus a manifest NAME.toml in the plugin directory.
// The guest speaks ABI v1 (docs/plugins.md); Go guests use package
// plugins/sdk. Each plugin runs in its own wazero runtime with a memory
// limit, a pool of instances, deny-by-default WASI, and (unless trusted) a
// deadline per call. A plugin that traps, loops, runs out of memory or breaks
// the ABI fails its call, never the node; its failure policy then rejects or
// passes the message.
//
// Usage:
//
//	h, err := plugins.New(plugins.Config{Dir: "plugins", CacheDir: "data/wazero", Logger: log})
//	if err != nil { ... }
//	defer h.Close()
//	if err := h.Start(ctx); err != nil { ... }
//	d, err := h.Command(ctx, cmd) // before the entity handles cmd
//	if err != nil { ... }
//	if d.Rejected { reply with d.Reason }
package plugins
