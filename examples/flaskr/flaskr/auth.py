"""Register, log in and log out; ``g.user`` for the views."""

from __future__ import annotations

import functools
import typing as t

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from poolkit import IntegrityError, db

bp = Blueprint("auth", __name__, url_prefix="/auth")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def login_required(view: F) -> F:
    """Redirect anonymous users to the login page."""

    @functools.wraps(view)
    def wrapped_view(**kwargs: t.Any) -> t.Any:
        if g.user is None:
            return redirect(url_for("auth.login"))
        return view(**kwargs)

    return t.cast(F, wrapped_view)


@bp.before_app_request
def load_logged_in_user() -> None:
    user_id = session.get("user_id")
    g.user = None if user_id is None else db.query_one(
        "SELECT * FROM user WHERE id = %s", (user_id,))


@bp.route("/register", methods=("GET", "POST"))
def register() -> t.Any:
    if request.method == "POST":
        username = request.form["username"]
        password = request.form["password"]
        error = None
        if not username:
            error = "Username is required."
        elif not password:
            error = "Password is required."
        if error is None:
            try:
                with db.transaction():
                    db.execute("INSERT INTO user (username, password) VALUES (%s, %s)",
                               (username, generate_password_hash(password)))
            except IntegrityError:  # the UNIQUE key, whichever driver raised it
                error = f"User {username} is already registered."
            else:
                return redirect(url_for("auth.login"))
        flash(error)
    return render_template("auth/register.html")


@bp.route("/login", methods=("GET", "POST"))
def login() -> t.Any:
    if request.method == "POST":
        username = request.form["username"]
        password = request.form["password"]
        error = None
        user = db.query_one("SELECT * FROM user WHERE username = %s", (username,))
        if user is None:
            error = "Incorrect username."
        elif not check_password_hash(user["password"], password):
            error = "Incorrect password."
        if error is None:
            assert user is not None
            session.clear()
            session["user_id"] = user["id"]
            return redirect(url_for("index"))
        flash(error)
    return render_template("auth/login.html")


@bp.route("/logout")
def logout() -> t.Any:
    session.clear()
    return redirect(url_for("index"))
