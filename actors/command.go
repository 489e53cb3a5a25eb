package actors

import (
	"encoding/json"
	"fmt"
	"reflect"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// NewCommand builds the envelope of a command value for entity kind/id: the
// type is the Go type's name, the payload its JSON. Reactors and tests use
// it to send typed commands through Runtime.Send.
func NewCommand(kind, id string, cmd any) (*troupev1.Command, error) {
	if cmd == nil {
		return nil, fmt.Errorf("actors: nil command for %s/%s", kind, id)
	}
	p, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("actors: encode %T: %w", cmd, err)
	}
	return &troupev1.Command{
		Kind:        kind,
		EntityId:    id,
		Type:        typeName(reflect.TypeOf(cmd)),
		Payload:     p,
		ContentType: "application/json",
	}, nil
}
