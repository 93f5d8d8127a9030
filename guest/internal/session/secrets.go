package session

import (
	"errors"
	"fmt"
	"strings"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/secrets"
)

// checkEnv validates the env of exec, shell_open and service_start.
func checkEnv(what string, env map[string]string) error {
	for k, v := range env {
		if !validEnvName(k) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s: invalid environment variable %q", what, clip(k))
		}
	}
	return nil
}

func validEnvName(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00")
}

// checkSecretEnv validates a secret_env: env names as for env, secret
// names as secrets_put accepts them.
func checkSecretEnv(what string, secretEnv map[string]string) error {
	for k, name := range secretEnv {
		if !validEnvName(k) {
			return fmt.Errorf("%s: invalid environment variable %q in secret_env", what, clip(k))
		}
		if !secrets.ValidName(name) {
			return fmt.Errorf("%s: invalid secret name %q in secret_env", what, clip(name))
		}
	}
	return nil
}

// withSecrets returns env overlaid with the secrets secretEnv names. On
// failure it has replied (secret_not_found naming the secret, never a
// value) and returns the error.
func (c *Conn) withSecrets(s *session, id uint64, what string, env, secretEnv map[string]string) (map[string]string, error) {
	if len(secretEnv) == 0 {
		return env, nil
	}
	vals, err := c.opts.Secrets.Resolve(secretEnv)
	if err != nil {
		var nf *secrets.NotFoundError
		switch {
		case errors.As(err, &nf):
			c.sendError(s, id, protocol.CodeSecretNotFound, fmt.Sprintf("%s: secret %q not found", what, nf.Name))
		case errors.Is(err, secrets.ErrBadRequest):
			c.sendError(s, id, protocol.CodeBadRequest, what+": "+err.Error())
		default:
			c.sendError(s, id, protocol.CodeIOError, what+": "+err.Error())
		}
		return nil, err
	}
	merged := make(map[string]string, len(env)+len(vals))
	for k, v := range env {
		merged[k] = v
	}
	for k, v := range vals {
		merged[k] = v
	}
	return merged, nil
}

// secretsPut replaces the guest's secrets. It runs on the reader, so a
// request behind it already sees the new set.
func (c *Conn) secretsPut(s *session, id uint64, payload []byte) {
	set, err := secrets.Parse(payload)
	if err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, "secrets_put: "+strings.TrimPrefix(err.Error(), secrets.ErrBadRequest.Error()+": "))
		return
	}
	if err := c.opts.Secrets.Put(set); err != nil {
		c.opts.Logf("session: secrets_put: %v", err)
		c.sendError(s, id, protocol.CodeIOError, "secrets_put: "+err.Error())
		return
	}
	c.send(s, protocol.SecretsPutOK{Type: protocol.TypeOK, ID: id, Count: len(set)}, nil)
}
