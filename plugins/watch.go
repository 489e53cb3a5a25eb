package plugins

import (
	"context"
	"log/slog"
	"time"

	"github.com/fsnotify/fsnotify"
)

// startWatcher watches Dir and reloads after changes settle. The watcher
// goroutine is owned by the Host and stopped by Close.
func (h *Host) startWatcher() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(h.cfg.Dir); err != nil {
		_ = w.Close()
		return err
	}
	h.wg.Add(1)
	go h.watch(w)
	return nil
}

func (h *Host) watch(w *fsnotify.Watcher) {
	defer h.wg.Done()
	defer w.Close()
	// ctx ends a reload in progress when Close is called.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() { cancel(); <-done }()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-h.stop:
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// Any change rescans (unchanged files are only hashed): a
			// Kubernetes ConfigMap, say, swaps a "..data" symlink and never
			// touches NAME.wasm itself.
			_ = ev
			timer.Reset(h.cfg.ReloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			h.log.Warn("plugin directory watch error", slog.String("dir", h.cfg.Dir), slog.Any("err", err))
			timer.Reset(h.cfg.ReloadDebounce) // events may have been lost: rescan
		case <-timer.C:
			if err := h.Reload(ctx); err != nil && ctx.Err() == nil {
				h.log.Debug("plugin reload finished with errors", slog.Any("err", err))
			}
		}
	}
}
