// A Sky Island example: the package's entry point (package.json "main") exports the
// functions; a returned Promise is awaited.
"use strict";

exports.greet = (name) => `Hello, ${name}!`;

exports.later = async (ms) => {
  await new Promise((resolve) => setTimeout(resolve, ms));
  return `waited ${ms} ms`;
};
