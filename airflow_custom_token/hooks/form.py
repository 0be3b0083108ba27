"""The connection form of Airflow 3.0 and 3.1, generated from the field table (`fields.py`).

Those releases ignore the provider info's `conn-fields` (which 3.2 and later read) and ask the hook for
wtforms widgets and a field behaviour instead (`CustomTokenHook.get_connection_form_widgets` /
`get_ui_field_behaviour`). wtforms and Flask-AppBuilder are imported when the form is built, in the
api-server, never by a task (neither is a dependency of the provider).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_custom_token.fields import EXTRA_FIELDS
from airflow_custom_token.fields import ui_field_behaviour as provider_info_behaviour


def connection_form_widgets() -> dict[str, Any]:
    """The form's extra fields as wtforms fields, from the field table (`fields.EXTRA_FIELDS`).

    Only Airflow 3.0 and 3.1 read them (`CustomTokenHook.get_connection_form_widgets`); 3.2 and later
    read `conn-fields` from the provider info. Their api-server replaces these wtforms classes with
    stand-ins that turn each field into a JSON schema (text, number, password, check box; a choice
    list through `any_of`), so an object or list field is a text input that holds JSON.
    """
    # only the 3.0/3.1 api-server builds the form: wtforms and FAB are not dependencies
    from wtforms import BooleanField, IntegerField, PasswordField, StringField
    from wtforms.validators import Optional, any_of

    try:
        from flask_babel import lazy_gettext
    except ImportError:  # Airflow 3 without the FAB provider

        def lazy_gettext(text: str) -> str:
            return text

    try:
        from flask_appbuilder.fieldwidgets import (
            BS3PasswordFieldWidget,
            BS3TextAreaFieldWidget,
            BS3TextFieldWidget,
        )
    except ImportError:  # no FAB: wtforms' own widgets
        BS3PasswordFieldWidget = BS3TextAreaFieldWidget = BS3TextFieldWidget = None

    widgets: dict[str, Any] = {}
    for field in EXTRA_FIELDS:
        validators: list[Any] = [Optional()]
        if field.choices:
            validators.append(any_of(list(field.choices)))
        description, default = field.description, field.form_default
        widget: Any = BS3TextFieldWidget
        if field.kind == "bool":
            factory: Any = BooleanField
            widget = None
        elif field.kind == "int":
            factory = IntegerField
        elif field.secret and field.kind == "str":
            factory, widget = PasswordField, BS3PasswordFieldWidget
        else:
            factory = StringField
            if field.kind in ("object", "list"):
                description, widget = f"{description} (JSON)", BS3TextAreaFieldWidget
                default = None if default is None else json.dumps(default)
            elif default is not None:
                default = str(default)
        options: dict[str, Any] = {"validators": validators, "description": description}
        if widget is not None:
            options["widget"] = widget()
        if default is not None:
            options["default"] = default
        widgets[field.key] = factory(lazy_gettext(field.label), **options)
    return widgets


def ui_field_behaviour() -> dict[str, Any]:
    """The standard fields' behaviour (hidden, relabeled, placeholders) in the hook method's format."""
    behaviour = provider_info_behaviour()
    return {key.replace("-", "_"): value for key, value in behaviour.items()}
