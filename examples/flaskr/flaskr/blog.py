"""The posts: list, create, update, delete (authors only)."""

from __future__ import annotations

import typing as t

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import abort

from poolkit import db

from .auth import login_required

bp = Blueprint("blog", __name__)


@bp.route("/")
def index() -> str:
    posts = db.query("SELECT p.id, title, body, created, author_id, username FROM post p "
                     "JOIN user u ON p.author_id = u.id ORDER BY created DESC, p.id DESC")
    return render_template("blog/index.html", posts=posts)


def get_post(id: int, check_author: bool = True) -> dict[str, t.Any]:
    """The post *id*; 404 when there is none, 403 when it is someone else's."""
    post = db.query_one("SELECT p.id, title, body, created, author_id, username FROM post p "
                        "JOIN user u ON p.author_id = u.id WHERE p.id = %s", (id,))
    if post is None:
        abort(404, f"Post id {id} doesn't exist.")
    if check_author and post["author_id"] != g.user["id"]:
        abort(403)
    return post


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create() -> t.Any:
    if request.method == "POST":
        title, body = request.form["title"], request.form["body"]
        if not title:
            flash("Title is required.")
        else:
            with db.transaction():
                db.execute("INSERT INTO post (title, body, author_id) VALUES (%s, %s, %s)",
                           (title, body, g.user["id"]))
            return redirect(url_for("blog.index"))
    return render_template("blog/create.html")


@bp.route("/<int:id>/update", methods=("GET", "POST"))
@login_required
def update(id: int) -> t.Any:
    post = get_post(id)
    if request.method == "POST":
        title, body = request.form["title"], request.form["body"]
        if not title:
            flash("Title is required.")
        else:
            with db.transaction():
                db.execute("UPDATE post SET title = %s, body = %s WHERE id = %s",
                           (title, body, id))
            return redirect(url_for("blog.index"))
    return render_template("blog/update.html", post=post)


@bp.route("/<int:id>/delete", methods=("POST",))
@login_required
def delete(id: int) -> t.Any:
    get_post(id)
    with db.transaction():
        db.execute("DELETE FROM post WHERE id = %s", (id,))
    return redirect(url_for("blog.index"))
