"""Recipes: one cutout turned into every file a catalog needs (Amazon's JPEG on white, a Shopify WebP, a thumbnail).

    from bgremover.recipes import load_recipes, render
    for recipe in load_recipes(["amazon", "thumbnail"]):
        rendered = render(rgb, alpha, recipe, icc_profile=icc, stem="shoe")
        Path(rendered.name).write_bytes(rendered.data)   # rendered.report says whether the channel takes it

The modules, by responsibility: declaration (the Recipe, the presets and the
user's TOML), geometry (canvas, fit, align, snap), shadows, encoding (colour
space, formats, the byte budget), compliance (the report) and rendering (one
recipe carried out). Pure steps on arrays and bytes: no settings, no logging,
no files but the recipes' own TOML.
"""

from bgremover.recipes.declaration import Recipe, RecipeError, load_recipes, preset_names
from bgremover.recipes.rendering import Rendered, render, render_many

__all__ = ["Recipe", "RecipeError", "Rendered", "load_recipes", "preset_names", "render", "render_many"]
