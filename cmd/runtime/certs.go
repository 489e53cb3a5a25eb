package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/cluster/node"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make certificates for TLS",
	}
	var (
		hosts    []string
		validFor time.Duration
	)
	dev := &cobra.Command{
		Use:   "dev-ca DIR",
		Short: "Write a development CA and a node certificate into DIR",
		Long: `Write a development CA (ca.pem, ca-key.pem) and a node certificate signed by it
(node.pem, node-key.pem) into DIR, for tests and local clusters. The node
certificate is valid for localhost, 127.0.0.1 and every --host, for serving
(API, NATS) and for the mutual TLS of NATS routes. Existing files are never
overwritten. For production, use your own CA.`,
		Example: `  troupe certs dev-ca ./certs --host node-1 --host 10.0.0.5
  troupe dev --tls-cert certs/node.pem --tls-key certs/node-key.pem --tls-ca certs/ca.pem
  troupe query balance '{"id":"acc-1"}' --node https://127.0.0.1:8080 --tls-ca certs/ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := node.WriteDevCerts(args[0], hosts, validFor)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA:          %s (key %s)\nnode cert:   %s\nnode key:    %s\n", c.CA, c.CAKey, c.Cert, c.Key)
			return nil
		},
	}
	dev.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP address the node certificate is valid for (repeatable; localhost and 127.0.0.1 are always in)")
	dev.Flags().DurationVar(&validFor, "valid-for", 365*24*time.Hour, "validity of the CA and the certificate")
	cmd.AddCommand(dev)
	return cmd
}
