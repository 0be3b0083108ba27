"""The integration and its connected account: validated, immutable, built from connections. No I/O.

- `raw`: what the provider reads of a connection (`RawConnection`), typed by the field table;
- `chain`: the inheritance chain (`integration_conn_id`), walked by a generator that the sync hook and
  the async trigger both drive (`drive_chain`, `adrive_chain`), and merged (`merge_chain`);
- `checks`: the generic checks the field table declares, and those it cannot say;
- `build`: `build_account`, in named phases, each a function that returns what it built and the
  problems it found (merge, check, collect the placeholder values, render every input, the allowed
  origins, the token request); it raises one `ConfigurationError` listing every problem;
- `connected`: the result, `ConnectedAccount`;
- `urls`: origins, URL checks and masking.

The fields themselves (keys, kinds, defaults, choices, ranges) are declared once, in
`airflow_custom_token.fields`.
"""

from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.chain import adrive_chain, drive_chain, load_chain
from airflow_custom_token.account.connected import ConnectedAccount, PerToken, Transport
from airflow_custom_token.account.raw import RawConnection, is_secret_name

__all__ = [
    "ConnectedAccount",
    "PerToken",
    "RawConnection",
    "Transport",
    "adrive_chain",
    "build_account",
    "drive_chain",
    "is_secret_name",
    "load_chain",
]
