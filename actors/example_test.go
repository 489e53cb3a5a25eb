package actors_test

import (
	"fmt"

	"github.com/troupe-dev/troupe/actors"
)

type Light struct{ On bool }
type Toggle struct{}
type Toggled struct{ On bool }

// A kind is pure functions: a handler decides events from (state, command),
// an applier folds an event into the state. Both run without a runtime.
func Example() {
	light := actors.NewKind("light", func(id string) Light { return Light{} })
	actors.Handle(light, func(s Light, _ Toggle) (actors.Decision, error) {
		return actors.Decision{Events: []any{Toggled{On: !s.On}}, Reply: !s.On}, nil
	})
	actors.On(light, func(s Light, e Toggled) Light { s.On = e.On; return s })

	s := light.Initial("kitchen")
	d, _ := light.Decide(s, Toggle{})
	s, _ = light.Apply(s, d.Events...)
	fmt.Println(d.Events, d.Reply, s.On)
	// Output: [{true}] true true
}
